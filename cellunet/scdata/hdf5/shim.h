/* C helpers for package hdf5. Every helper is called from Go on a locked
 * OS thread (libhdf5's error stack and automatic error printing are
 * per-thread in thread-safe builds), see guard() in hdf5.go. */
#ifndef SCDATA_HDF5_SHIM_H
#define SCDATA_HDF5_SHIM_H

#include <stdint.h>
#include <stdlib.h>
#include <hdf5.h>

/* Memory type codes shared with Go (hdf5.go, type Type). */
enum {
	SC_INT8 = 1, SC_INT16, SC_INT32, SC_INT64,
	SC_UINT8, SC_UINT16, SC_UINT32, SC_UINT64,
	SC_FLOAT32, SC_FLOAT64
};

/* Object kinds returned by sc_kind. */
enum { SC_KIND_NONE = 0, SC_KIND_GROUP = 1, SC_KIND_DATASET = 2, SC_KIND_OTHER = 3 };

/* Type classes returned by sc_type_info. */
enum {
	SC_CLASS_OTHER = 0, SC_CLASS_INT = 1, SC_CLASS_FLOAT = 2, SC_CLASS_STRING = 3,
	SC_CLASS_REFERENCE = 4, SC_CLASS_ENUM = 5, SC_CLASS_COMPOUND = 6
};

void sc_quiet(void);
size_t sc_errmsg(char *buf, size_t len);
hid_t sc_native(int code);
hid_t sc_vlen_str(void);
hid_t sc_fixed_str(size_t size);
hid_t sc_bool_enum(void);
hid_t sc_ref_obj_type(void);
int sc_kind(hid_t loc, const char *path);
int sc_type_info(hid_t type, size_t *size, int *is_vlen, int *is_signed);
int sc_space_dims(hid_t space, int maxrank, hsize_t *dims);
hid_t sc_create_file(const char *path);
hid_t sc_open_file(const char *path);
int sc_register_lzf(void);
hid_t sc_deref(hid_t obj, const void *ref);
herr_t sc_vlen_reclaim(hid_t type, hid_t space, void *buf);
hid_t sc_vlen_str_like(hid_t file_type);
hid_t sc_space_1d(hsize_t n);
hid_t sc_space_select(hid_t dset, int rank, hsize_t start0, hsize_t count0, const hsize_t *dims);
hid_t sc_create_dataset(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
	int extendable, int nchunk, const hsize_t *chunk, int gzip);
herr_t sc_get_filesize(hid_t obj, hsize_t *size);
int sc_has_filters(hid_t dset);

#endif

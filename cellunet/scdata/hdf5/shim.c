#include <string.h>
#include "shim.h"

/* The object-info API is versioned: HDF5 1.12 added H5O_info2_t (object
 * tokens instead of addresses) with H5Oget_info_by_name3, and its default
 * API maps H5O_info_t to it while H5Oget_info_by_name2 keeps taking the
 * 1.10 struct (H5O_info1_t). Name the version explicitly on each side, so
 * the shim builds on 1.10 (Debian 12), 1.12 and 1.14 (Debian 13, conda)
 * whatever API mapping the library defaults to. */
#if H5_VERSION_GE(1, 12, 0)
typedef H5O_info2_t sc_obj_info;
#define SC_GET_INFO_BY_NAME H5Oget_info_by_name3
#else
typedef H5O_info_t sc_obj_info;
#define SC_GET_INFO_BY_NAME H5Oget_info_by_name2
#endif

void sc_quiet(void) {
	H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
	H5Eclear2(H5E_DEFAULT);
}

struct sc_walk_ctx {
	const char *first; /* outermost description */
	const char *last;  /* innermost description */
	const char *last_func;
};

static herr_t sc_walk(unsigned n, const H5E_error2_t *e, void *data) {
	struct sc_walk_ctx *ctx = (struct sc_walk_ctx *)data;
	(void)n;
	if (e->desc == NULL || e->desc[0] == 0) return 0;
	if (ctx->first == NULL) ctx->first = e->desc;
	ctx->last = e->desc;
	ctx->last_func = e->func_name;
	return 0;
}

/* sc_errmsg writes a one-line summary of the current thread's error stack
 * into buf ("outermost description (innermost description)") and clears
 * the stack. It returns the message length. */
size_t sc_errmsg(char *buf, size_t len) {
	struct sc_walk_ctx ctx = {NULL, NULL, NULL};
	if (len == 0) return 0;
	buf[0] = 0;
	H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, sc_walk, &ctx);
	if (ctx.first == NULL) {
		snprintf(buf, len, "libhdf5 reported a failure without details");
	} else if (ctx.last != NULL && strcmp(ctx.first, ctx.last) != 0) {
		snprintf(buf, len, "%s (%s)", ctx.first, ctx.last);
	} else {
		snprintf(buf, len, "%s", ctx.first);
	}
	H5Eclear2(H5E_DEFAULT);
	return strlen(buf);
}

hid_t sc_native(int code) {
	switch (code) {
	case SC_INT8: return H5T_NATIVE_INT8;
	case SC_INT16: return H5T_NATIVE_INT16;
	case SC_INT32: return H5T_NATIVE_INT32;
	case SC_INT64: return H5T_NATIVE_INT64;
	case SC_UINT8: return H5T_NATIVE_UINT8;
	case SC_UINT16: return H5T_NATIVE_UINT16;
	case SC_UINT32: return H5T_NATIVE_UINT32;
	case SC_UINT64: return H5T_NATIVE_UINT64;
	case SC_FLOAT32: return H5T_NATIVE_FLOAT;
	case SC_FLOAT64: return H5T_NATIVE_DOUBLE;
	}
	return -1;
}

/* sc_vlen_str returns a new variable-length UTF-8 string type (close it). */
hid_t sc_vlen_str(void) {
	hid_t t = H5Tcopy(H5T_C_S1);
	if (t < 0) return t;
	if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
		H5Tclose(t);
		return -1;
	}
	return t;
}

/* sc_fixed_str returns a new null-padded fixed-length string type. */
hid_t sc_fixed_str(size_t size) {
	hid_t t = H5Tcopy(H5T_C_S1);
	if (t < 0) return t;
	if (H5Tset_size(t, size) < 0 || H5Tset_strpad(t, H5T_STR_NULLPAD) < 0) {
		H5Tclose(t);
		return -1;
	}
	return t;
}

/* sc_bool_enum returns the enum type h5py uses for numpy bool (close it). */
hid_t sc_bool_enum(void) {
	hid_t t = H5Tenum_create(H5T_NATIVE_INT8);
	int8_t v;
	if (t < 0) return t;
	v = 0;
	if (H5Tenum_insert(t, "FALSE", &v) < 0) { H5Tclose(t); return -1; }
	v = 1;
	if (H5Tenum_insert(t, "TRUE", &v) < 0) { H5Tclose(t); return -1; }
	return t;
}

hid_t sc_ref_obj_type(void) { return H5T_STD_REF_OBJ; }

/* sc_kind reports what path names relative to loc, checking every link of
 * the path so that a missing intermediate group (or a dataset used as one)
 * is "none", not an error. */
int sc_kind(hid_t loc, const char *path) {
	char buf[4096];
	size_t n = strlen(path), i;
	sc_obj_info info;
	htri_t ok;
	if (n == 0 || n >= sizeof(buf)) return -1;
	if (strcmp(path, "/") == 0 || strcmp(path, ".") == 0) return SC_KIND_GROUP;
	memcpy(buf, path, n + 1);
	info.type = H5O_TYPE_GROUP;
	for (i = 1; i <= n; i++) {
		char c;
		if (buf[i] != '/' && buf[i] != 0) continue;
		if (buf[i - 1] == '/') continue;
		if (info.type != H5O_TYPE_GROUP) return SC_KIND_NONE; /* below a dataset */
		c = buf[i];
		buf[i] = 0;
		ok = H5Lexists(loc, buf, H5P_DEFAULT);
		if (ok < 0) return -1;
		if (ok == 0) return SC_KIND_NONE;
		ok = H5Oexists_by_name(loc, buf, H5P_DEFAULT);
		if (ok < 0) return -1;
		if (ok == 0) return SC_KIND_NONE; /* dangling soft link */
		if (SC_GET_INFO_BY_NAME(loc, buf, &info, H5O_INFO_BASIC, H5P_DEFAULT) < 0) return -1;
		buf[i] = c;
	}
	switch (info.type) {
	case H5O_TYPE_GROUP: return SC_KIND_GROUP;
	case H5O_TYPE_DATASET: return SC_KIND_DATASET;
	default: return SC_KIND_OTHER;
	}
}

/* sc_type_info classifies a datatype. */
int sc_type_info(hid_t type, size_t *size, int *is_vlen, int *is_signed) {
	H5T_class_t c = H5Tget_class(type);
	*size = H5Tget_size(type);
	*is_vlen = 0;
	*is_signed = 0;
	switch (c) {
	case H5T_INTEGER:
		*is_signed = H5Tget_sign(type) == H5T_SGN_2;
		return SC_CLASS_INT;
	case H5T_FLOAT: return SC_CLASS_FLOAT;
	case H5T_STRING:
		*is_vlen = H5Tis_variable_str(type) > 0;
		return SC_CLASS_STRING;
	case H5T_REFERENCE: return SC_CLASS_REFERENCE;
	case H5T_ENUM: return SC_CLASS_ENUM;
	case H5T_COMPOUND: return SC_CLASS_COMPOUND;
	case H5T_NO_CLASS: return -1;
	default: return SC_CLASS_OTHER;
	}
}

/* sc_space_dims returns the rank (-1 on error, -2 if above maxrank) and
 * fills dims. A scalar space has rank 0; a null space reports rank 1, dims 0. */
int sc_space_dims(hid_t space, int maxrank, hsize_t *dims) {
	H5S_class_t c = H5Sget_simple_extent_type(space);
	int rank;
	if (c == H5S_NO_CLASS) return -1;
	if (c == H5S_NULL) { dims[0] = 0; return 1; }
	if (c == H5S_SCALAR) return 0;
	rank = H5Sget_simple_extent_ndims(space);
	if (rank < 0) return -1;
	if (rank > maxrank) return -2;
	if (H5Sget_simple_extent_dims(space, dims, NULL) < 0) return -1;
	return rank;
}

/* Files are opened with the strongest close degree so that H5Fclose fails
 * loudly (and leaks show up) if an object is still open. */
static hid_t sc_fapl(void) {
	hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
	if (fapl < 0) return fapl;
	if (H5Pset_fclose_degree(fapl, H5F_CLOSE_SEMI) < 0) { H5Pclose(fapl); return -1; }
	return fapl;
}

hid_t sc_open_file(const char *path) {
	hid_t fapl = sc_fapl(), f;
	if (fapl < 0) return fapl;
	f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
	H5Pclose(fapl);
	return f;
}

hid_t sc_create_file(const char *path) {
	hid_t fapl = sc_fapl(), f;
	if (fapl < 0) return fapl;
	f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
	H5Pclose(fapl);
	return f;
}

hid_t sc_deref(hid_t obj, const void *ref) {
	return H5Rdereference2(obj, H5P_DEFAULT, H5R_OBJECT, ref);
}

/* sc_vlen_reclaim frees what a read of variable-length data allocated:
 * H5Dvlen_reclaim until 1.10, H5Treclaim (same arguments) from 1.12, where
 * the former is only a deprecated symbol. */
herr_t sc_vlen_reclaim(hid_t type, hid_t space, void *buf) {
#if H5_VERSION_GE(1, 12, 0)
	return H5Treclaim(type, space, H5P_DEFAULT, buf);
#else
	return H5Dvlen_reclaim(type, space, H5P_DEFAULT, buf);
#endif
}

/* sc_vlen_str_like returns a variable-length memory string type with the
 * character set of file_type (close it). */
hid_t sc_vlen_str_like(hid_t file_type) {
	H5T_cset_t cset = H5Tget_cset(file_type);
	hid_t t = H5Tcopy(H5T_C_S1);
	if (t < 0) return t;
	if (cset < 0) cset = H5T_CSET_ASCII;
	if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, cset) < 0) {
		H5Tclose(t);
		return -1;
	}
	return t;
}

hid_t sc_space_1d(hsize_t n) {
	return H5Screate_simple(1, &n, NULL);
}

/* sc_space_select returns the dataset's file space with the rows
 * [start0, start0+count0) of dimension 0 and all of the other dimensions
 * selected (close it). dims is the dataset's current shape. */
hid_t sc_space_select(hid_t dset, int rank, hsize_t start0, hsize_t count0, const hsize_t *dims) {
	hsize_t start[H5S_MAX_RANK], count[H5S_MAX_RANK];
	hid_t s = H5Dget_space(dset);
	int i;
	if (s < 0) return s;
	if (rank == 0) return s;
	for (i = 0; i < rank; i++) {
		start[i] = 0;
		count[i] = dims[i];
	}
	start[0] = start0;
	count[0] = count0;
	if (H5Sselect_hyperslab(s, H5S_SELECT_SET, start, NULL, count, NULL) < 0) {
		H5Sclose(s);
		return -1;
	}
	return s;
}

/* sc_create_dataset creates a dataset; with extendable, dimension 0 is
 * unlimited. nchunk == 0 means contiguous layout. gzip > 0 adds deflate. */
hid_t sc_create_dataset(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
	int extendable, int nchunk, const hsize_t *chunk, int gzip) {
	hsize_t maxdims[H5S_MAX_RANK];
	hid_t space, dcpl, d;
	int i;
	for (i = 0; i < rank; i++) maxdims[i] = dims[i];
	if (extendable && rank > 0) maxdims[0] = H5S_UNLIMITED;
	space = rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, dims, maxdims);
	if (space < 0) return space;
	dcpl = H5Pcreate(H5P_DATASET_CREATE);
	if (dcpl < 0) { H5Sclose(space); return -1; }
	if (nchunk > 0) {
		if (H5Pset_chunk(dcpl, nchunk, chunk) < 0) goto fail;
		if (gzip > 0 && H5Pset_deflate(dcpl, (unsigned)gzip) < 0) goto fail;
	}
	d = H5Dcreate2(loc, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
	H5Pclose(dcpl);
	H5Sclose(space);
	return d;
fail:
	H5Pclose(dcpl);
	H5Sclose(space);
	return -1;
}

herr_t sc_get_filesize(hid_t obj, hsize_t *size) {
	hid_t f = H5Iget_file_id(obj);
	herr_t r;
	if (f < 0) return -1;
	r = H5Fget_filesize(f, size);
	H5Fclose(f);
	return r;
}

/* sc_has_filters returns the number of filters in the dataset's pipeline. */
int sc_has_filters(hid_t dset) {
	hid_t dcpl = H5Dget_create_plist(dset);
	int n;
	if (dcpl < 0) return -1;
	n = H5Pget_nfilters(dcpl);
	H5Pclose(dcpl);
	return n;
}

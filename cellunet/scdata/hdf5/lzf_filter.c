/* HDF5 filter 32000 (LZF, as written by h5py): decoder only. The
 * decompression itself is Go code (package lzf) exported by
 * lzf_filter.go. */
#include "shim.h"
#include "_cgo_export.h"

#define SC_LZF_FILTER 32000
#define SC_LZF_MAX_OUT ((size_t)1 << 32)

/* For reading, h5py stores the chunk size in bytes in cd_values[2]; when
 * it is missing, start from the input size and grow the buffer. */
static size_t sc_lzf_filter(unsigned int flags, size_t cd_nelmts, const unsigned int cd_values[],
	size_t nbytes, size_t *buf_size, void **buf) {
	size_t cap;
	int tries;
	if (!(flags & H5Z_FLAG_REVERSE)) {
		return 0; /* no encoder: writing LZF is not supported */
	}
	cap = (cd_nelmts >= 3 && cd_values[2] != 0) ? (size_t)cd_values[2] : 0;
	if (cap == 0) cap = nbytes > *buf_size ? nbytes : *buf_size;
	if (cap < 64) cap = 64;
	for (tries = 0; tries < 24 && cap <= SC_LZF_MAX_OUT; tries++) {
		void *out = H5allocate_memory(cap, 0);
		long long n;
		if (out == NULL) return 0;
		n = scdataLZFDecompress(*buf, nbytes, out, cap);
		if (n >= 0) {
			H5free_memory(*buf);
			*buf = out;
			*buf_size = cap;
			return (size_t)n;
		}
		H5free_memory(out);
		if (n != -2) return 0; /* corrupt */
		cap *= 2;
	}
	return 0;
}

static const H5Z_class2_t sc_lzf_class = {
	H5Z_CLASS_T_VERS,
	(H5Z_filter_t)SC_LZF_FILTER,
	0, /* encoder_present */
	1, /* decoder_present */
	"lzf (gotorch-train scdata decoder)",
	NULL,
	NULL,
	(H5Z_func_t)sc_lzf_filter,
};

/* sc_register_lzf registers the decoder unless filter 32000 is already
 * available (for example from h5py's plugin). Returns <0 on failure. */
int sc_register_lzf(void) {
	htri_t avail = H5Zfilter_avail(SC_LZF_FILTER);
	if (avail > 0) return 0;
	H5Eclear2(H5E_DEFAULT);
	return H5Zregister(&sc_lzf_class);
}

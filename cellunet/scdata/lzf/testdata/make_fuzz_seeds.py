#!/usr/bin/python3
"""Extract real LZF chunks written by h5py (the anndata 0.7 fixtures) as
seeds for FuzzDecompress (and TestH5pyChunks). Run from this folder with
/usr/bin/python3 (python3-h5py); GOTORCH_TESTDATA_DIR defaults to
/work/shared/data."""
import os
import h5py
import numpy as np

DATA = os.environ.get("GOTORCH_TESTDATA_DIR", "/work/shared/data")
OUT = "fuzz/FuzzDecompress"


def golit(b):
    return "".join(chr(c) if 32 <= c < 127 and chr(c) not in '"\\' else "\\x%02x" % c for c in b)


n = 0
for ver in ("v0.7.0", "v0.7.8"):
    f = h5py.File(f"{DATA}/format_fixtures/anndata_0.7_archives/{ver}/adata.h5ad", "r")

    def visit(name, d):
        global n
        if not isinstance(d, h5py.Dataset) or d.compression != "lzf" or d.dtype.kind not in "iuf":
            return
        mask, raw = d.id.read_direct_chunk((0,) * d.ndim)
        if mask != 0:  # LZF did not help; HDF5 stored the chunk raw
            return
        size = int(np.prod(d.chunks)) * d.dtype.itemsize
        if size > 65535 or len(raw) > 8000 or name.split("/")[0] not in ("X", "raw", "obsm", "layers"):
            return
        with open(f"{OUT}/fixture_{ver}_{name.replace('/', '_')}", "w") as fh:
            fh.write(f'go test fuzz v1\n[]byte("{golit(raw)}")\nuint16({size})\n')
        n += 1

    f.visititems(visit)
print(n, "seeds")

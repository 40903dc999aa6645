#!/usr/bin/python3
"""Write the numpy-made .npz fixtures for the npz tests (run with Debian's
/usr/bin/python3 and python3-numpy 1.24 from this folder):

- numpy_same.npz: np.savez of arrays the Go writer can express (C order,
  little-endian); TestMatchesNumpyBytes writes the same arrays and expects
  identical bytes.
- numpy_mixed.npz: np.savez of the cases the reader must also handle:
  Fortran order, big-endian, 0-d, empty, int32, long unicode.
- numpy_compressed.npz: np.savez_compressed of a few arrays (deflate).
"""
import numpy as np

same = dict(
    cell_gen=(np.arange(3 * 128, dtype=np.float32).reshape(3, 128) / 7).astype(np.float32),
    labels=np.array([2, 0, 1], dtype=np.int64),
    classes=np.array(["B cell", "CD14+ Monocyte", "\u00c4 \u03b2 \U0001F600"]),
    f8=np.linspace(-1, 1, 5),
    i4=np.arange(6, dtype=np.int32).reshape(2, 3),
    empty=np.zeros((0, 128), dtype=np.float32),
    scalar=np.float64(2.5),
)
np.savez("numpy_same.npz", **same)

mixed = dict(
    fortran=np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
    big=np.arange(4, dtype=">f8"),
    big_i4=np.arange(4, dtype=">i4"),
    zero_d=np.array(7, dtype=np.int64),
    longstr=np.array(["x" * 300, ""]),
)
np.savez("numpy_mixed.npz", **mixed)
np.savez_compressed("numpy_compressed.npz", cell_gen=np.ones((50, 128), np.float32) * 0.25, labels=np.arange(50))
print("ok")

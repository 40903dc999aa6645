#!/usr/bin/python3
"""Fixtures for the label-order test (labels_test.go): how sklearn's
LabelEncoder orders numeric and string label columns.

Run with Debian's /usr/bin/python3 (python3-anndata 0.8, python3-h5py,
python3-sklearn) from this folder:

    /usr/bin/python3 make_label_golden.py

Writes numeric_labels.h5ad (AnnData: 24 cells x 12 genes of counts that
survive the reference's filters, obs columns of every kind: categorical
with integer categories, int64, float64 with NaN-free values, negative
integers, categorical and plain strings of digits), numeric_labels.h5
(plain HDF5: /X dense counts, /Y int32 labels) and
numeric_labels_expected.json: per column, LabelEncoder().fit(values)
.classes_ (numbers as JSON numbers, strings as strings) and the encoded
ids, where values is what the reference passes: adata.obs[col].values.
"""
import json
import h5py
import numpy as np
import pandas as pd
import anndata as ad
from sklearn.preprocessing import LabelEncoder

rng = np.random.default_rng(3)
n, g = 24, 12
X = rng.integers(1, 5, size=(n, g)).astype(np.float32)   # every cell and gene kept
ints = rng.choice([1, 2, 3, 10, 11, 20, 100], size=n)
floats = rng.choice([0.5, 2.0, 10.0, 2.25, 100.0], size=n)
neg = rng.choice([-10, -2, 0, 5, 30], size=n)
obs = pd.DataFrame({
    "int_cat": pd.Categorical(ints),
    "int_col": ints.astype(np.int64),
    "float_col": floats.astype(np.float64),
    "neg_int": neg.astype(np.int64),
    "str_cat": pd.Categorical(ints.astype(str)),
    "str_col": ints.astype(str).astype(object),
}, index=[f"c{i}" for i in range(n)])
a = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(g)]))
a.write_h5ad("numeric_labels.h5ad")
with h5py.File("numeric_labels.h5", "w") as f:
    f["X"] = X
    f["Y"] = ints.astype(np.int32)

back = ad.read_h5ad("numeric_labels.h5ad")
expected = {}
for col in obs.columns:
    enc = LabelEncoder().fit(back.obs[col].values)
    expected[col] = {"classes": [c.item() if hasattr(c, "item") else c for c in enc.classes_],
                     "ids": enc.transform(back.obs[col].values).tolist()}
enc = LabelEncoder().fit(ints.astype(np.int32))
expected["plain_Y"] = {"classes": [int(c) for c in enc.classes_], "ids": enc.transform(ints).tolist()}
assert expected["int_cat"]["classes"] == [1, 2, 3, 10, 11, 20, 100]
assert expected["str_cat"]["classes"][:3] == ["1", "10", "100"]
with open("numeric_labels_expected.json", "w") as f:
    json.dump(expected, f, indent=1, sort_keys=True)
    f.write("\n")
print(json.dumps({k: v["classes"] for k, v in expected.items()}))

"""Exact equality of observations, infos and batches (dicts, tuples, ndarrays with dtype and shape,
NumPy scalars bit for bit)."""
import numpy as np


def assert_same(a, b, path="value"):
    if isinstance(b, dict):
        assert isinstance(a, dict) and set(a) == set(b), (
            f"{path}: keys {sorted(a) if isinstance(a, dict) else a!r} != {sorted(b)}")
        for k in b:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(b, tuple):
        assert isinstance(a, tuple) and len(a) == len(b), f"{path}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray), f"{path}: {type(a)} is not an ndarray"
        assert a.dtype == b.dtype and a.shape == b.shape, f"{path}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        if b.dtype == object:
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                assert_same(x, y, f"{path}[{i}]")
        else:
            np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(b, np.generic):  # a NumPy scalar: its type and its bits (a NaN's payload too)
        assert type(a) is type(b) and a.tobytes() == b.tobytes(), f"{path}: {a!r} != {b!r}"
    else:
        assert a == b or (isinstance(b, float) and a != a and b != b), f"{path}: {a!r} != {b!r}"

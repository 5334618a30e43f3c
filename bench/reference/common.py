"""What both reference servers share: observations and rewards as JSON-ready Python values."""
import numpy as np


def plain(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x

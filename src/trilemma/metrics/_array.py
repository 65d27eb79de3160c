"""Array conversion shared by every metric: numpy arrays and torch tensors are both accepted."""

from __future__ import annotations

import numpy as np
import torch


def as_numpy_f64(x) -> np.ndarray:
    """`x` (numpy array, torch tensor on any device, or nested sequence) as a float64 numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def as_tensor(x, device: torch.device | str | None, dtype: torch.dtype) -> torch.Tensor:
    """`x` as a detached torch tensor of `dtype` on `device` (default CPU); tensors skip the numpy round trip."""
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.asarray(x))
    return x.detach().to(device=device or "cpu", dtype=dtype)


def as_features(x, name: str) -> np.ndarray:
    """`x` as a float64 (N, D) feature matrix; anything else is a ValueError naming `name`."""
    arr = as_numpy_f64(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be an (N, D) feature matrix, got shape {arr.shape}")
    return arr

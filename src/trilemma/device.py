"""The device a command runs on, from the user's --device (or a grid's `device:`), checked before any compute."""

from __future__ import annotations

import torch

from .errors import TrilemmaError


def resolve_device(spec: str | None, where: str = "--device") -> torch.device:
    """`spec` as a torch.device that exists here (None: cuda if available, else cpu); a one-line error naming
    `where` for a name torch does not know or a device this machine does not have."""
    if spec is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        raise TrilemmaError(f"{where} {spec!r}: not a device (cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrilemmaError(f"{where} {spec!r}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TrilemmaError(f"{where} {spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise TrilemmaError(f"{where} {spec!r}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise TrilemmaError(f"{where} {spec!r}: trilemma runs on cpu, cuda or mps")
    return device

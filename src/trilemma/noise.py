"""Random numbers for sampling: per-sample noise streams (`SampleNoise`) and the `randn` every sampler draws
through, so a torch.Generator, a SampleNoise or None (torch's global RNG) can be passed as `generator`."""

from __future__ import annotations

import math

import numpy as np
import torch

from .errors import TrilemmaError

__all__ = ["SampleNoise", "randn", "randn_like", "initial_noise", "read_noise_file"]


class SampleNoise:
    """Per-sample noise (EDM's StackedRandomGenerator, Karras et al. 2022): row k of every draw comes from
    sample `first + k`'s own generator, a NumPy PCG64 seeded by SeedSequence((seed, first + k, d)) (full-width
    seeds: torch's CPU generator keeps only 32 bits of a seed, which makes equal streams likely among tens of
    thousands of samples). A sample's noise (x_T, every step's noise, a DDGAN latent) therefore depends only on
    (seed, sample index), never on the batch it is drawn in, the number of processes or the device. x_T is each
    sample's first draw; `skip` passes over it when x_T is given.

    Each per-sample draw size d has its own stream, drawn in blocks of max(1, block // d) draws per sample, so
    a 2-D toy's thousands of samples do not pay a Python call per sample and step; the block depends only on d,
    so the numbers a sample receives do not depend on the batch either. Nothing is drawn before it is needed:
    a deterministic sampler started from a given x_T costs nothing here."""

    def __init__(self, seed: int, first: int, n: int, block: int = 256):
        if not 0 <= seed < 2**63:
            raise TrilemmaError(f"seed must be in [0, 2^63), got {seed}")
        self.seed, self.first, self.n, self.block = seed, first, n, block
        self._streams: dict[int, dict] = {}  # per-sample size d -> generators, current block, draws taken

    def _take(self, d: int, materialise: bool = True) -> torch.Tensor | None:
        st = self._streams.setdefault(d, {"gens": None, "buf": None, "taken": 0})
        m = max(1, self.block // d)  # draws per block, a function of d only
        i = st["taken"]
        st["taken"] += 1
        if not materialise and st["buf"] is None and i < m:
            return None  # a skip inside the first block: drawn (and passed over) if a later draw needs the block
        if st["gens"] is None:
            st["gens"] = [np.random.Generator(np.random.PCG64(np.random.SeedSequence((self.seed, self.first + k, d))))
                          for k in range(self.n)]
        while st["buf"] is None or i >= st["start"] + m:  # next block (skipped draws are drawn and passed over)
            buf = np.empty((self.n, m * d), dtype=np.float32)
            for k, g in enumerate(st["gens"]):
                g.standard_normal(out=buf[k], dtype=np.float32)
            st["start"] = 0 if st["buf"] is None else st["start"] + m
            st["buf"] = torch.from_numpy(buf)
        j = i - st["start"]
        return st["buf"][:, j * d : (j + 1) * d]

    def randn(self, shape, device=None, dtype=torch.float32) -> torch.Tensor:
        """Standard normal noise of `shape` = (n, ...), row k from sample first + k."""
        shape = tuple(shape)
        if shape[0] != self.n:
            raise ValueError(f"SampleNoise holds {self.n} samples, asked for {shape[0]}")
        return self._take(math.prod(shape[1:])).reshape(shape).to(device=device, dtype=dtype)

    def skip(self, shape) -> None:
        """Pass over one draw of `shape` (x_T when it is given rather than drawn)."""
        self._take(math.prod(tuple(shape)[1:]), materialise=False)


Generator = torch.Generator | SampleNoise | None


def randn(shape, generator: Generator, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise on `device`, drawn on the generator's device (so a CPU generator gives
    the same numbers whatever device the result lives on); a `SampleNoise` draws each row from its sample."""
    if isinstance(generator, SampleNoise):
        return generator.randn(shape, device, dtype)
    draw_on = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=draw_on, dtype=dtype).to(device)


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like x (see `randn`)."""
    return randn(x.shape, generator, x.device, x.dtype)


def initial_noise(n: int, sample_shape: tuple[int, ...], seed: int = 0, first_index: int = 0) -> torch.Tensor:
    """The x_T that `samplers.generate` draws for samples first_index .. first_index + n - 1 under `seed`."""
    return SampleNoise(seed, first_index, n).randn((n, *sample_shape))


def read_noise_file(path: str, sample_shape: tuple[int, ...]) -> torch.Tensor:
    """x_T from a .npy file: a finite, real-valued array of shape (n, *sample_shape)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        why = "not in NumPy's .npy format" if "pickle" in str(e) or not str(e) else str(e).splitlines()[0]
        raise TrilemmaError(f"{path}: not a readable .npy array ({why})") from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise TrilemmaError(f"{path}: an .npz archive; --noise takes one .npy array")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TrilemmaError(f"{path}: holds {arr.dtype} values; --noise takes real numbers")
    if arr.ndim < 1 or tuple(arr.shape[1:]) != sample_shape or arr.shape[0] < 1:
        raise TrilemmaError(f"{path}: shape {tuple(arr.shape)} does not match (n, {', '.join(map(str, sample_shape))})")
    wide = arr.astype(np.float64)
    if not np.isfinite(wide).all() or np.abs(wide).max() > np.finfo(np.float32).max:
        raise TrilemmaError(f"{path}: holds NaN, infinity or values beyond float32's range")
    return torch.from_numpy(wide.astype(np.float32))

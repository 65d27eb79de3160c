"""How a network runs, not what it computes: numeric precision, compilation and memory layout.

Only networks run in reduced precision. `FastNetwork` wraps a backbone (a denoiser's network, a GAN generator, an
autoencoder) in `torch.autocast` and hands its output back in float32, so the schedule maths (float64 on CPU and
CUDA, which autocast leaves alone), the samplers' arithmetic and the metrics are what they are in float32 eager
mode. `torch.compile` compiles the backbone alone, and channels_last changes only the memory layout of its 4-D
weights and inputs. A `Runtime` of fp32, eager and the default layout changes nothing: no wrapper is put in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import TrilemmaError

__all__ = ["PRECISIONS", "AUTO", "DEFAULT_PRECISION", "DEFAULT_COMPILE", "Runtime", "FastNetwork", "check_precision",
           "auto_precision", "native_bf16", "resolve_runtime", "accelerate_modules", "autocast_call"]

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
AUTO = "auto"  # a precision setting, not a precision: `auto_precision` of the device


@dataclass(frozen=True)
class Runtime:
    """How networks run: `precision` (a key of PRECISIONS), `compile` (torch.compile each backbone) and
    `channels_last` (the memory layout of 4-D weights and inputs)."""

    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    @property
    def is_default(self) -> bool:
        """fp32, eager, default layout: networks are left exactly as they are."""
        return self.precision == "fp32" and not self.compile and not self.channels_last

    def to_dict(self) -> dict:
        """What results files record beside every row."""
        return {"precision": self.precision, "compile": self.compile, "channels_last": self.channels_last}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Runtime":
        """The inverse of `to_dict`; a missing entry (results written before rows recorded it) is the default."""
        d = d or {}
        return cls(d.get("precision") or "fp32", bool(d.get("compile")), bool(d.get("channels_last")))

    def describe(self) -> str:
        """"bf16 + compile + channels_last", "fp32" for the default."""
        return " + ".join([self.precision] + ["compile"] * self.compile + ["channels_last"] * self.channels_last)


# What a command runs when no flag says otherwise: the fastest setting whose quality change was within the run-to-run
# spread (BENCHMARKS.md, issue 23). Precision `auto` (see `auto_precision`); no compilation, whose start-up (2-50 s
# a backbone on the CPU) is more than it saves in a demo or a sample command; channels_last by `channels_last_default`.
DEFAULT_PRECISION = AUTO
DEFAULT_COMPILE = False


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bfloat16 matrix products natively: a CPU with AVX512-BF16 or AMX (oneDNN's own
    test). Elsewhere on the CPU bf16 is emulated, and slower than fp32."""
    if device.type != "cpu":
        return False
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def auto_precision(device: torch.device, bound: bool = False) -> str:
    """What precision `auto` runs: bf16 on a CPU with native bfloat16, where it measured 2.0x faster per NFE on the
    Fashion-MNIST UNet and the toy MLP with an FD change inside the spread of two seeds (BENCHMARKS.md, issue 23); fp32 elsewhere
    (a GPU's setting is not measured yet), and fp32 for a variational bound (`bound`: bits/dim are an exact
    likelihood and do not carry bf16 rounding unless asked for by name)."""
    return "bf16" if not bound and native_bf16(device) else "fp32"


def check_precision(precision: str, device: torch.device, where: str = "--precision") -> None:
    """A one-line error for a precision this code does not know or the device cannot run: fp16 needs a GPU
    (CUDA or MPS; CPU autocast in fp16 is emulated and slower than fp32), bf16 needs a CPU or a CUDA device that
    supports it (compute capability 8.0 or later)."""
    if precision not in PRECISIONS:
        raise TrilemmaError(f"{where} {precision!r}: not a precision; choose one of {', '.join([*PRECISIONS, AUTO])}")
    kind = device.type
    if precision == "fp16" and kind == "cpu":
        raise TrilemmaError(f"{where} fp16: not supported on the CPU (use bf16, or fp16 on a CUDA or MPS device)")
    if precision == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise TrilemmaError(f"{where} bf16: {torch.cuda.get_device_name(device)} does not support bfloat16 "
                            "(use fp16)")
    if precision == "bf16" and kind == "mps":
        raise TrilemmaError(f"{where} bf16: not supported on MPS by this library (use fp16)")


def channels_last_default(device: torch.device) -> bool:
    """Whether convolutional backbones run channels_last when nothing says otherwise. The layout is chosen by
    measurement (benchmarks/precision.py speed), not by a guess. On the CPU (BENCHMARKS.md, issue 23) it measured
    0.96x-1.09x alone and slower with bf16 in eager mode (1.45x against bf16's 1.99x on the Fashion-MNIST UNet), so
    the default layout stays; on a GPU it is not measured yet, and the default layout stays too."""
    return False


def resolve_runtime(precision: str = DEFAULT_PRECISION, compile: bool = DEFAULT_COMPILE,
                    channels_last: bool | None = None, device: torch.device | None = None, where: str = "--precision",
                    bound: bool = False) -> Runtime:
    """A checked `Runtime` for `device`: precision `auto` becomes `auto_precision(device, bound)` (`bound`: for a
    variational bound, not for sampling), channels_last None takes `channels_last_default`."""
    device = torch.device("cpu") if device is None else device
    if precision == AUTO:
        precision = auto_precision(device, bound)
    check_precision(precision, device, where)
    if channels_last is None:
        channels_last = channels_last_default(device)
    return Runtime(precision, bool(compile), bool(channels_last))


def _to_channels_last(a):
    if torch.is_tensor(a) and a.ndim == 4:
        return a.contiguous(memory_format=torch.channels_last)
    return a


def _to_float32(out):
    """A network's output back in float32 (tensors in tuples and lists too); other dtypes pass."""
    if torch.is_tensor(out):
        return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out
    if isinstance(out, (tuple, list)):
        return type(out)(_to_float32(o) for o in out)
    return out


def autocast_call(fn, runtime: Runtime, device_type: str, *args, **kwargs):
    """fn(*args, **kwargs) under the runtime's autocast, its output in float32."""
    if runtime.precision == "fp32":
        return fn(*args, **kwargs)
    with torch.autocast(device_type, dtype=runtime.dtype):
        out = fn(*args, **kwargs)
    return _to_float32(out)


class FastNetwork(nn.Module):
    """A backbone run under a `Runtime`: its forward in autocast with a float32 output, optionally compiled,
    optionally channels_last. It computes what the backbone computes (to the precision's rounding), and every
    attribute the backbone has is read through it, so code that builds a denoiser from it is unchanged."""

    def __init__(self, net: nn.Module, runtime: Runtime):
        super().__init__()
        self.net, self.runtime = net, runtime
        if runtime.channels_last:
            net.to(memory_format=torch.channels_last)  # 4-D weights only; other parameters are left as they are
        if runtime.compile:
            # dynamo keeps at most `recompile_limit` compiled versions of a forward's code object, counted over every
            # instance of the class; a bench of many checkpoints of one network class would otherwise fall back to
            # eager, silently, after the 8th (benchmarks/precision.py's third compiled latent UNet did)
            cfg = torch._dynamo.config
            cfg.recompile_limit = max(cfg.recompile_limit, 64)
        # the compiled callable shares net's parameters; kept out of the module tree (no second state_dict entry)
        self.__dict__["_run"] = torch.compile(net) if runtime.compile else net

    def forward(self, *args, **kwargs):
        if self.runtime.channels_last:
            args = tuple(_to_channels_last(a) for a in args)
        device_type = next((a.device.type for a in args if torch.is_tensor(a)), "cpu")
        return autocast_call(self.__dict__["_run"], self.runtime, device_type, *args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            net = self._modules.get("net")
            if net is None:
                raise
            return getattr(net, name)


def accelerate_modules(modules: nn.ModuleDict, names, runtime: Runtime) -> None:
    """Put each backbone `modules[name]` (in `names`) under `runtime`, in place; nothing for the default runtime.
    A module that is already a FastNetwork is refused (a network is wrapped once)."""
    if runtime.is_default:
        return
    for name in names:
        if isinstance(modules[name], FastNetwork):
            raise TrilemmaError(f"module {name!r} already runs under {modules[name].runtime.describe()}")
        modules[name] = FastNetwork(modules[name], runtime)

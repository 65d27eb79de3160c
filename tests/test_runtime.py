"""How networks run (`runtime`): reduced precision, torch.compile and channels_last change the arithmetic of the
network only, never what the samplers compute; every setting is recorded where results are written, and a
precision the device cannot run is refused with one line."""

import json

import pytest
import torch

from helpers import DIGITS, TOY, assert_one_line_error, random_checkpoint, run
from trilemma.checkpoint import load_checkpoint
from trilemma.errors import TrilemmaError
from trilemma.families import build_family
from trilemma.loading import sampler_from_checkpoint
from trilemma.runtime import FastNetwork, Runtime, native_bf16, resolve_runtime
from trilemma.samplers import generate

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits_ck(tmp_path_factory):
    """A small digits UNet (v-prediction, attention at 4x4), output layer scaled so samples stay in range."""
    return random_checkpoint(tmp_path_factory.mktemp("digits"), DIGITS, (1, 8, 8),
                       scale_out=lambda net: net.unet.conv_out.weight.mul_(0.2))


def _samples(ck_path, runtime, sampler="ddim", steps=10, n=32):
    den, decode = sampler_from_checkpoint(load_checkpoint(ck_path), CPU, runtime)
    with torch.no_grad():
        return decode(generate(den, n, load_checkpoint(ck_path).sample_shape, sampler=sampler, steps=steps, seed=3))


def test_the_default_runtime_leaves_the_networks_as_they_are(digits_ck):
    """fp32, eager, default layout puts no wrapper in: the samples are the library's fp32 samples by construction."""
    family_den, _ = sampler_from_checkpoint(load_checkpoint(digits_ck), CPU, Runtime())
    assert not any(isinstance(m, FastNetwork) for m in family_den.modules())
    plain, _ = sampler_from_checkpoint(load_checkpoint(digits_ck), CPU)
    assert not any(isinstance(m, FastNetwork) for m in plain.modules())


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp"])
def test_bf16_samples_agree_with_fp32_from_the_same_noise(digits_ck, sampler):
    """bf16 keeps 8 bits of mantissa (relative rounding 2^-9 = 0.002 per op): over 10 steps of the digits UNet the
    samples (data in [-1, 1]) move by at most 0.05 and 0.01 on average. The output is float32, and the schedule
    maths is not touched, so the error is the network's alone."""
    fp32 = _samples(digits_ck, Runtime())
    bf16 = _samples(digits_ck, Runtime("bf16"))
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    diff = (bf16 - fp32).abs()
    assert diff.max() < 0.05 and diff.mean() < 0.01, (diff.max().item(), diff.mean().item())
    assert diff.max() > 0  # the network did run in bf16


def test_channels_last_gives_the_fp32_samples(digits_ck):
    """A memory layout changes only the order of the convolution's sums: equal to float32 rounding."""
    a = _samples(digits_ck, Runtime())
    b = _samples(digits_ck, Runtime(channels_last=True))
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)


def test_fast_network_reads_through_to_its_backbone_and_keeps_its_state_dict(digits_ck):
    ck = load_checkpoint(digits_ck)
    fam = build_family(ck.cfg, (1, 8, 8))
    net = fam.modules["net"]
    wrapped = FastNetwork(net, Runtime("bf16"))
    assert wrapped.unet is net.unet  # attributes of the backbone are read through the wrapper
    assert {k.removeprefix("net.") for k in wrapped.state_dict()} == set(net.state_dict())
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10.0, 500.0])
    assert wrapped(x, t).dtype == torch.float32


def test_compiled_toy_samples_equal_eager_ones(tmp_path):
    """torch.compile (inductor) fuses and reorders float32 arithmetic: the samples agree with eager to 1e-5."""
    ck = random_checkpoint(tmp_path, TOY, (2,))
    eager = _samples(ck, Runtime(), steps=5, n=64)
    compiled = _samples(ck, Runtime(compile=True), steps=5, n=64)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-5)


def test_a_precision_the_device_cannot_run_is_refused(digits_ck, tmp_path):
    with pytest.raises(TrilemmaError, match="fp16: not supported on the CPU"):
        resolve_runtime("fp16", device=CPU)
    with pytest.raises(TrilemmaError, match="not a precision"):
        resolve_runtime("fp8", device=CPU)
    res = run("sample", digits_ck, "--precision", "fp16", "--device", "cpu", "--out", tmp_path / "s.png")
    assert_one_line_error(res, "--precision fp16", "CPU")
    assert not (tmp_path / "s.png").exists() and not (tmp_path / "s.npz").exists()
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"num_samples": 8, "batch_size": 8, "device": "cpu", "precision": "fp16",
                                "rows": [{"checkpoint": str(digits_ck), "sampler": "ddim", "steps": 2}]}))
    assert_one_line_error(run("bench", grid, "--out", tmp_path / "b", "--quiet"), "precision fp16", "CPU")
    assert not (tmp_path / "b").exists()


def test_precision_and_compile_are_recorded_in_results(digits_ck, tmp_path):
    """Rows at different settings are never confused: each row of results.json carries its own, the environment
    the grid's and the thread count, and the table gets a `networks` column."""
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"num_samples": 16, "batch_size": 16, "device": "cpu", "bpd": False,
                                "rows": [{"checkpoint": str(digits_ck), "label": "d", "sampler": "ddim", "steps": 2,
                                          "precision": ["fp32", "bf16"]}]}))
    res = run("bench", grid, "--out", tmp_path / "b", "--quiet", "--no-channels-last")
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "b" / "results.json").read_text())
    got = [r["runtime"] for r in s["rows"][1:]]
    assert got == [{"precision": p, "compile": False, "channels_last": False} for p in ("fp32", "bf16")]
    assert all(0 <= r["precision"] <= 1 for r in s["rows"])  # the k-NN precision metric keeps its own key
    assert len({r["key"] for r in s["rows"]}) == 3
    env = s["environment"]
    assert env["runtime"] == {"precision": "fp32", "compile": False, "channels_last": False}
    assert env["threads"] == torch.get_num_threads()
    assert "| model | sampler | networks |" in res.output and "| bf16 |" in res.output
    fp32, bf16 = s["rows"][1], s["rows"][2]
    assert fp32["nfe"] == bf16["nfe"] == 2


def test_sample_and_eval_record_the_runtime(digits_ck, tmp_path):
    import numpy as np

    res = run("sample", digits_ck, "--precision", "bf16", "-n", "4", "--steps", "2", "--out", tmp_path / "s.png",
              "--quiet")
    assert res.exit_code == 0, res.output
    assert "bf16" in res.output
    z = np.load(tmp_path / "s.npz")
    assert str(z["precision"]) == "bf16" and not bool(z["compile"])
    res = run("eval", digits_ck, "--bpd", "-n", "8", "--draws", "1", "--precision", "bf16", "--json", tmp_path / "e.json",
              "--quiet")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "e.json").read_text())["runtime"]["precision"] == "bf16"


@pytest.mark.auto_precision
@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_only_on_a_cpu_with_native_bfloat16_and_never_for_a_bound(monkeypatch, native):
    from trilemma import runtime

    monkeypatch.setattr(runtime, "native_bf16", lambda device: native)
    want = "bf16" if native else "fp32"
    assert resolve_runtime(device=CPU).precision == want  # the default is `auto`
    assert resolve_runtime("auto", device=CPU).precision == want
    assert resolve_runtime("auto", device=CPU, bound=True).precision == "fp32"
    assert resolve_runtime("fp32", device=CPU).precision == "fp32"  # a precision by name is what runs


@pytest.mark.auto_precision
def test_native_bf16_is_a_property_of_the_cpu_alone():
    assert native_bf16(torch.device("cuda")) is False and native_bf16(torch.device("meta")) is False
    assert isinstance(native_bf16(CPU), bool)


@pytest.mark.auto_precision
def test_the_default_bench_and_eval_record_what_auto_ran(digits_ck, tmp_path, monkeypatch):
    """On a CPU with native bf16 the default bench samples in bf16 and records it per row; its bits/dim, like
    `eval --bpd`, are computed in fp32 and recorded as such."""
    from trilemma import runtime

    monkeypatch.setattr(runtime, "native_bf16", lambda device: True)
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"num_samples": 16, "batch_size": 16, "device": "cpu", "bpd": True, "bpd_images": 8,
                                "bpd_draws": 1, "rows": [{"checkpoint": str(digits_ck), "label": "d",
                                                          "sampler": "ddim", "steps": 2}]}))
    res = run("bench", grid, "--out", tmp_path / "b", "--quiet")
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "b" / "results.json").read_text())
    assert s["rows"][1]["runtime"]["precision"] == "bf16" and s["environment"]["runtime"]["precision"] == "bf16"
    assert s["environment"]["bpd_runtime"]["precision"] == "fp32" and "bpd" in s["rows"][1]
    assert "networks in bf16 (bits/dim in fp32)" in (tmp_path / "b" / "results.md").read_text()
    res = run("eval", digits_ck, "--bpd", "-n", "8", "--draws", "1", "--json", tmp_path / "e.json", "--quiet")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "e.json").read_text())["runtime"]["precision"] == "fp32"
    res = run("sample", digits_ck, "-n", "4", "--steps", "2", "--out", tmp_path / "s.png", "--quiet")
    assert res.exit_code == 0, res.output
    import numpy as np

    assert str(np.load(tmp_path / "s.npz")["precision"]) == "bf16"


def test_a_row_sets_its_own_layout(digits_ck, tmp_path):
    """channels_last per row, like precision and compile: its own key, recorded beside the row."""
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"num_samples": 8, "batch_size": 8, "device": "cpu", "bpd": False,
                                "rows": [{"checkpoint": str(digits_ck), "label": "d", "sampler": "ddim", "steps": 2,
                                          "channels_last": [False, True]}]}))
    res = run("bench", grid, "--out", tmp_path / "b", "--quiet")
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [r["runtime"]["channels_last"] for r in s["rows"][1:]] == [False, True]
    assert len({r["key"] for r in s["rows"]}) == 3
    grid.write_text(grid.read_text().replace("[false, true]", '"yes"'))
    assert_one_line_error(run("bench", grid, "--out", tmp_path / "c", "--quiet"), "channels_last must be true or false")


def _train_toy(tmp_path, name, **train):
    import copy

    import yaml

    cfg = copy.deepcopy(TOY)
    cfg["train"].update(train)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = run("train", path, "--out", tmp_path / name, "--quiet")
    assert res.exit_code == 0, res.output
    from safetensors.torch import load_file

    ck = tmp_path / name / "checkpoint"
    return load_file(ck / "model.safetensors"), load_file(ck / "train.safetensors")


def test_bf16_training_keeps_weights_ema_and_optimizer_state_in_float32(tmp_path):
    """Mixed precision changes the arithmetic of forward and backward, not what is stored: the same tensors, all
    float32, and weights that moved by about as much as fp32 training moved them."""
    w32, s32 = _train_toy(tmp_path, "fp32")
    w16, s16 = _train_toy(tmp_path, "bf16", mixed_precision="bf16")
    assert w16.keys() == w32.keys() and s16.keys() == s32.keys()
    assert all(t.dtype == torch.float32 for t in [*w16.values(), *s16.values()] if t.is_floating_point())
    moved = max((w16[k] - w32[k]).abs().max().item() for k in w32)
    assert 0 < moved < 0.05, moved  # 6 steps at lr 1e-3: bf16 rounding, not a different training


def test_compiled_training_is_eager_training(tmp_path):
    """train.compile (inductor) fuses float32 arithmetic: after 6 steps the weights agree with eager to 1e-5."""
    eager, _ = _train_toy(tmp_path, "eager")
    compiled, _ = _train_toy(tmp_path, "compiled", compile=True)
    for k in eager:
        torch.testing.assert_close(compiled[k], eager[k], rtol=0, atol=1e-5)


class _ZeroGradients(torch.nn.Module):
    """A stand-in for a miscompiled network: the same parameters and forward values, but zero gradients (what
    torch.compile gave most layers of the fmnist UNet, BENCHMARKS.md)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t):
        return self.net(x, t).detach() + 0 * sum(p.sum() for p in self.net.parameters())


def test_a_miscompiled_backward_is_refused_and_a_correct_one_passes(tmp_path):
    import contextlib

    from helpers import write_config
    from trilemma.config import load_config
    from trilemma.training import ShardedRNG, check_compiled_gradients, phase_parameters

    cfg = load_config(write_config(tmp_path / "toy.yaml", TOY))
    torch.manual_seed(0)
    fam = build_family(cfg, (2,))
    x = torch.randn(64, 2)
    (phase, names), = fam.phases.items()
    params = phase_parameters(fam.modules, names)
    args = (phase, x, lambda: ShardedRNG(5, 0, 1, CPU), contextlib.nullcontext)
    good = torch.nn.ModuleDict({"net": torch.compile(fam.modules["net"])})
    check_compiled_gradients(fam, fam.modules, good, [], params, *args)  # compiled, correct: passes
    bad = torch.nn.ModuleDict({"net": _ZeroGradients(fam.modules["net"])})
    with pytest.raises(TrilemmaError, match=r"train.compile: torch.compile's gradient of net\.\S+ is off by 1\.00"):
        check_compiled_gradients(fam, fam.modules, bad, [], params, *args)


def test_compiled_training_of_a_loss_that_needs_double_backward_is_refused(tmp_path):
    """DDGAN's R1 penalty differentiates a gradient; compiled networks cannot (torch 2.13): one line, no run dir."""
    from helpers import TOY_GAN, write_config

    path = write_config(tmp_path / "gan.yaml", {**TOY_GAN, "train": {**TOY_GAN["train"], "compile": True}})
    res = run("train", path, "--out", tmp_path / "g", "--quiet")
    assert_one_line_error(res, "train.compile", "gradient of a gradient")
    assert not (tmp_path / "g").exists()

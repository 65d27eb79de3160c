"""Config keys that no preset sets: each one set through a config (YAML + --set, as a user would) and its
effect checked on the family it builds (seconds on a CPU)."""

import json

import pytest
import torch

from helpers import TOY, TOY_GAN, TOY_VDM, write_config
from trilemma.config import load_config
from trilemma.errors import TrilemmaError
from trilemma.families import build_family
from trilemma.training import ShardedRNG


def _cfg(tmp_path, base: dict, *overrides: str):
    return load_config(write_config(tmp_path / "c.yaml", base), list(overrides))


def test_schedule_beta_start_end_set_the_linear_betas_and_the_export(tmp_path):
    from trilemma.export import ddim_scheduler_for

    cfg = _cfg(tmp_path, TOY, "schedule.beta_start=5e-4", "schedule.beta_end=0.03", "schedule.num_timesteps=50")
    betas = build_family(cfg, (2,)).schedule.betas()
    assert len(betas) == 50
    # read back from the float32 cumprod of alphabar: each beta is off by a few float32 ulps of 1 (1e-6 is ~8)
    assert betas[0].item() == pytest.approx(5e-4, abs=1e-6) and betas[-1].item() == pytest.approx(0.03, abs=1e-6)
    sched = ddim_scheduler_for(cfg)  # the diffusers export carries the same betas
    assert (sched.config.beta_start, sched.config.beta_end) == (5e-4, 0.03)
    assert torch.allclose(sched.betas.double(), betas, rtol=0, atol=1e-6)


def test_schedule_grid_eps_moves_ddgans_grid(tmp_path):
    T, b_min, b_max, eps = 4, 0.1, 20.0, 0.05
    cfg = _cfg(tmp_path, TOY_GAN, f"schedule.grid_eps={eps}")
    schedule = build_family(cfg, (2,)).schedule
    # alphabar_k = alphabar(u_k) / alphabar(u_0) at u_k = eps + k / T (1 - eps), -log alphabar(u) the VP-SDE's
    u = [eps + k / T * (1 - eps) for k in range(T + 1)]
    nla = [0.5 * (b_max - b_min) * v**2 + b_min * v for v in u]
    want = torch.tensor([nla[0] - v for v in nla], dtype=torch.float64)
    assert torch.allclose(schedule.log_alphabar, want, rtol=1e-12, atol=1e-12)
    default = build_family(_cfg(tmp_path, TOY_GAN), (2,)).schedule
    assert not torch.allclose(schedule.log_alphabar, default.log_alphabar)


@pytest.mark.parametrize("antithetic", [True, False])
def test_vdm_antithetic_draws_low_discrepancy_times(tmp_path, antithetic):
    cfg = _cfg(tmp_path, TOY_VDM, f"vdm.antithetic={str(antithetic).lower()}")
    family = build_family(cfg, (2,))
    seen = {}
    terms = family.terms

    def spy(modules, x, u, *rest):
        seen["u"] = u.double()
        return terms(modules, x, u, *rest)

    family.terms = spy
    B = 64
    family.loss("model", family.modules, torch.randn(B, 2), ShardedRNG(0), step=0)
    gaps = seen["u"].sort().values.diff()
    # antithetic: (u + i / B) mod 1, evenly spaced 1 / B apart; independent uniforms: anything but
    assert torch.allclose(gaps, torch.full_like(gaps, 1 / B), atol=1e-6) == antithetic


def test_vdm_cond_gamma_range_normalises_the_networks_conditioning(tmp_path):
    cfg = _cfg(tmp_path, TOY_VDM, "vdm.cond_gamma_min=-10", "vdm.cond_gamma_max=10")
    family = build_family(cfg, (2,))
    den = family.denoiser(family.modules)
    assert den.cond(torch.tensor([-10.0, 0.0, 10.0])).tolist() == pytest.approx([0.0, 500.0, 1000.0])
    # what the network sees at time t: the normalised gamma(t) of the (learned) schedule
    t = torch.tensor([0.0, 0.5, 1.0])
    with torch.no_grad():
        g = family.schedule(t).double()
        assert torch.allclose(den.net_time(t).double(), 1000 * (g + 10) / 20, rtol=1e-5)
    bad = _cfg(tmp_path, TOY_VDM, "vdm.cond_gamma_min=5", "vdm.cond_gamma_max=5")
    with pytest.raises(TrilemmaError, match="vdm.cond_gamma_max"):
        build_family(bad, (2,))


def test_train_weight_decay_reaches_the_optimizer(tmp_path):
    from trilemma.training import train

    cfg = _cfg(tmp_path, TOY, "train.weight_decay=0.05", "train.steps=1")
    assert build_family(cfg, (2,)).optimizer_options("model")["weight_decay"] == 0.05
    ck = train(cfg, tmp_path / "run", progress=False)
    groups = json.loads((ck / "train.json").read_text())["optimizers"]
    decays = {g["weight_decay"] for opt in groups.values() for g in opt["param_groups"]}
    assert decays == {0.05}, groups
    # DDGAN's two Adam phases take no weight decay whatever train.weight_decay says
    gan = build_family(_cfg(tmp_path, TOY_GAN, "train.weight_decay=0.05"), (2,))
    assert {gan.optimizer_options(p)["weight_decay"] for p in ("disc", "gen")} == {0.0}


def test_train_seed_decides_the_run(tmp_path):
    """train.seed (only ever set to a refused value elsewhere): the same seed trains the same weights, another
    seed other ones (initial weights, data order and noise all follow it)."""
    from safetensors.torch import load_file

    from trilemma.training import train

    def weights(seed, name):
        ck = train(_cfg(tmp_path, TOY, f"train.seed={seed}", "train.steps=1"), tmp_path / name, progress=False)
        return load_file(str(ck / "model.safetensors"))

    a, again, other = weights(3, "a"), weights(3, "again"), weights(4, "other")
    assert all(torch.equal(a[k], again[k]) for k in a)  # the same computation, repeated
    assert not all(torch.equal(a[k], other[k]) for k in a)

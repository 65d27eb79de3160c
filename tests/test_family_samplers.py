"""Every family that can sample x every registered sampler, through `samplers.generate`.

Each family (`families.FAMILIES` entries with no `no_sampler_reason`, in pixel space on toy2d and as a latent
model on a tiny digits autoencoder) is built with untrained, seeded weights; its denoiser either refuses a
sampler with one line (a score sampler on a model that draws x0) or gives finite, reproducible samples with the
NFE the registry promises, independent of how they are split into batches. Sampler options are checked by
`generate` against the rules declared in the samplers' signatures.
"""

import math

import numpy as np
import pytest
import torch

from helpers import TOY, TOY_GAN, TOY_VDM, write_config
from trilemma.config import load_config
from trilemma.denoiser import CountNFE, draws_x0
from trilemma.errors import TrilemmaError
from trilemma.families import FAMILIES, build_family
from trilemma.noise import initial_noise
from trilemma.samplers import (
    check_sampler_options,
    SAMPLER_INFO,
    all_sampler_options,
    check_sampler_supports,
    default_spacing,
    generate,
)
from trilemma.schedules import time_grid
from trilemma.training import train

N, STEPS, SPLIT = 8, 3, 3  # samples per run, grid steps (DDGAN: its T), first batch of the split run
SPLIT_TOL = {"rtol": 1e-5, "atol": 1e-5}  # batches of different sizes: equal up to float32 rounding, not bitwise

# the pixel-space configs of the families that sample, on toy2d points
PIXEL = {"ddpm": TOY, "vdm": TOY_VDM, "ddgan": TOY_GAN}
AE = {
    "family": "autoencoder",
    "data": {"name": "digits"},
    "autoencoder": {"channels": [8, 16], "latent_channels": 2, "norm_groups": 4, "pad": 0, "scale_images": 300},
    "train": {"steps": 1, "batch_size": 16, "lr": 1e-3, "warmup": 1, "save_every": 0},
}
# the same families on the autoencoder's 2 x 4 x 4 latents (latent.autoencoder is set by the fixture)
_UNET = {"model": {"channels": [8], "attention": [False], "norm_groups": 4}, "data": {"name": "digits"}}
LATENT = {
    "ddpm": {"family": "ddpm", **_UNET},
    "vdm": {"family": "vdm", **_UNET, "schedule": {"name": "learned", "hidden": 8}, "vdm": {"fourier": False}},
    "ddgan": {"family": "ddgan", **_UNET, "schedule": {"name": "vp-sde-grid", "num_timesteps": 2},
              "gan": {"latent_dim": 4, "d_channels": [8], "tanh": False}},
}

# a distilled student of a teacher trained for one step (the fixtures below set distill.teacher)
PIXEL["distill"] = {"family": "distill", "data": TOY["data"], "distill": {"student_steps": 2}}
LATENT["distill"] = {"family": "distill", "data": {"name": "digits"}, "distill": {"student_steps": 2}}
ONE_STEP = {"steps": 1, "batch_size": 16, "warmup": 0, "save_every": 0}
# the other distill methods, in pixel space: a consistency student and an adversarial one of T = 2 steps
PIXEL["distill-consistency"] = {**PIXEL["distill"], "distill": {"method": "consistency", "grid_steps": 8}}
PIXEL["distill-adversarial"] = {**PIXEL["distill"], "distill": {"method": "adversarial", "student_steps": 2},
                                "gan": TOY_GAN["gan"], "sample": {"sampler": "ddpm"}}

SAMPLING = [name for name, cls in FAMILIES.items() if cls.no_sampler_reason is None]
CASES = SAMPLING + [f"latent-{name}" for name in SAMPLING] + ["distill-consistency", "distill-adversarial"]
# samplers that draw noise at their default options on a grid of more than one step (ddim's eta is 0)
STOCHASTIC = {"ddpm", "ancestral", "langevin", "consistency"}  # fresh noise at every step but the last


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
    """A tiny digits autoencoder (f = 2, 2 x 4 x 4 latents), trained for one step (under a second)."""
    d = tmp_path_factory.mktemp("ae")
    train(load_config(write_config(d / "ae.yaml", AE)), d / "ae", progress=False)
    return d / "ae"


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """The toy DDPM trained for one step: a teacher for the pixel distill case."""
    d = tmp_path_factory.mktemp("teacher")
    train(load_config(write_config(d / "t.yaml", TOY, train=ONE_STEP)), d / "t", progress=False)
    return d / "t"


@pytest.fixture(scope="module")
def latent_teacher_run(tmp_path_factory, ae_run):
    """A latent DDPM on the autoencoder's latents, trained for one step: a teacher for the latent distill case."""
    d = tmp_path_factory.mktemp("latent-teacher")
    cfg = write_config(d / "t.yaml", LATENT["ddpm"], latent={"autoencoder": str(ae_run)}, train=ONE_STEP)
    train(load_config(cfg), d / "t", progress=False)
    return d / "t"


def build(case: str, request, tmp_path):
    """(family with seeded untrained weights in eval mode, its grid's step count) for a case of CASES."""
    latent = case.startswith("latent-")
    name = case.removeprefix("latent-")
    table = LATENT if latent else PIXEL
    if name not in table:
        pytest.fail(f"family {name} can sample but has no {'latent' if latent else 'pixel'} config in this test")
    sections = {"latent": {"autoencoder": str(request.getfixturevalue("ae_run"))}} if latent else {}
    if name.startswith("distill"):  # the student's latent space is its teacher's
        teacher = request.getfixturevalue("latent_teacher_run" if latent else "teacher_run")
        sections = {"distill": {**table[name]["distill"], "teacher": str(teacher)}}
    cfg = load_config(write_config(tmp_path / f"{case}.yaml", table[name], **sections))
    torch.manual_seed(0)
    family = build_family(cfg, (1, 8, 8) if latent else (2,))
    family.modules.eval()
    if case == "distill-adversarial":  # its latent path starts at zero (G is the teacher): make the latent matter
        torch.nn.init.normal_(family.modules["net"].mapping[-1].weight, std=0.1)
    steps = STEPS  # a DDGAN's grid: its T steps (an adversarial student's are distill.student_steps)
    if family.draws_x0:
        steps = cfg.distill.student_steps if cfg.family == "distill" else cfg.schedule.num_timesteps
    return family, steps


def data_shape(family) -> tuple[int, ...]:
    return getattr(family, "data_shape", family.sample_shape)


@pytest.mark.parametrize("sampler", list(SAMPLER_INFO))
@pytest.mark.parametrize("case", CASES)
def test_family_sampler(case, sampler, request, tmp_path):
    """A score sampler (needs_score) on a family whose denoiser draws x0 is refused before any evaluation, with
    one line naming the sampler; otherwise generate gives finite samples of the family's sample shape, decoding
    into its data shape, with SamplerInfo.nfe network evaluations (one callback each) for the grid's step count;
    the same seed gives the same samples, a different seed other ones, and with x_T given the seed matters
    exactly for stochastic samplers (and any sampler on a model that draws x0); and sample k is the same whether
    drawn in one batch of N or in batches of SPLIT and N - SPLIT starting at first_index."""
    family, steps = build(case, request, tmp_path)
    info = SAMPLER_INFO[sampler]
    den = CountNFE(family.denoiser(family.modules))
    assert draws_x0(den) == family.draws_x0, "the family's flag matches its denoiser"
    shape = family.sample_shape

    if info.needs_score and family.draws_x0:
        with pytest.raises(TrilemmaError) as e:
            check_sampler_supports(den, sampler)
        assert "\n" not in str(e.value) and f"sampler {sampler}" in str(e.value), str(e.value)
        with pytest.raises(TrilemmaError, match=f"sampler {sampler} needs the score"):
            generate(den, N, shape, sampler=sampler, steps=steps)
        assert den.nfe == 0, "refused before any network evaluation"
        return
    check_sampler_supports(den, sampler)

    options = {o.name: o.default for o in info.options}
    spacing = default_spacing(sampler)
    grid_steps = len(time_grid(den.schedule, steps, spacing)) - 1

    def run(n=N, **kw):
        return generate(den, n, shape, sampler=sampler, steps=steps, spacing=spacing, **{"seed": 0, **options, **kw})

    seen = []
    x = run(callback=seen.append)
    assert x.shape == (N, *shape) and x.dtype == torch.float32 and torch.isfinite(x).all()
    nfe = info.nfe(grid_steps, options)
    assert den.nfe == nfe, f"{den.nfe} network evaluations for {grid_steps} grid steps, SamplerInfo.nfe says {nfe}"
    assert [c["i"] for c in seen] == list(range(nfe)) and torch.equal(seen[-1]["x"], x)
    decoded = family.decode(x)
    assert decoded.shape == (N, *data_shape(family)) and torch.isfinite(decoded).all()

    assert torch.equal(run(), x), "same seed, same samples"
    assert not torch.allclose(run(seed=1), x), "another seed, another x_T"
    x_T = initial_noise(N, shape, seed=0)
    assert torch.equal(run(noise=x_T), x), "x_T given is x_T drawn: the seed's other noise is unchanged"
    same_start = run(noise=x_T, seed=1)
    if sampler in STOCHASTIC or family.draws_x0:
        assert not torch.allclose(same_start, x), "a stochastic run depends on the seed beyond x_T"
    else:
        assert torch.equal(same_start, x), "a deterministic run depends on x_T only"

    split = torch.cat([run(SPLIT), run(N - SPLIT, first_index=SPLIT)])
    # float32 rounding of the network differs between batch shapes; it reaches the samples through the largest
    # intermediate x0_hat (an untrained eps-net's x0_hat = (z - sigma eps_hat) / alpha is ~1 / alpha_1 at t = 1)
    scale = max(1.0, max(c["denoised"].abs().max().item() for c in seen))
    tol = {k: v * scale if k == "atol" else v for k, v in SPLIT_TOL.items()}
    torch.testing.assert_close(split, x, **tol, msg=lambda m: f"samples depend on the batch split: {m}")


def test_families_without_a_sampler_say_why(tmp_path):
    """A family with a no_sampler_reason (the autoencoder) has no denoiser: asking for one is that one line.
    (A family that can sample is in CASES, and fails there until this file gives it a config.)"""
    for name, cls in FAMILIES.items():
        if cls.no_sampler_reason is None:
            continue
        assert "\n" not in cls.no_sampler_reason
        cfg = load_config(write_config(tmp_path / f"{name}.yaml", AE, family=name))
        with pytest.raises(TrilemmaError) as e:
            build_family(cfg, (1, 8, 8)).denoiser(None)
        assert str(e.value) == cls.no_sampler_reason


# --- options ---------------------------------------------------------------------------------------------------

OPTIONS = [(s, o) for s, info in SAMPLER_INFO.items() for o in info.options]


def other_valid(o):
    """A value other than the default that the option's rule accepts."""
    if o.type is bool:
        return not o.default
    if o.type is int:
        return o.default + 1
    r = o.rule
    return (r.low + r.high) / 2 if r.high is not None and (r.low + r.high) / 2 != o.default else o.default / 2


def outside_rule(o) -> list:
    """Values the option's rule refuses: past each bound, NaN, and a value of the wrong type."""
    if o.type is bool:
        return [1, "yes"]
    r, out = o.rule, [math.nan, 1.5 if o.type is int else True]
    if r.high is not None:
        out.append(r.high + (1 if o.type is int else 0.5))
    if r.low is not None:
        out.append(r.low if r.above else r.low - (1 if o.type is int else 0.5))
    return out


@pytest.fixture(scope="module")
def toy_ddpm(tmp_path_factory):
    cfg = load_config(write_config(tmp_path_factory.mktemp("cfg") / "toy.yaml", TOY))
    torch.manual_seed(0)
    family = build_family(cfg, (2,))
    family.modules.eval()
    return CountNFE(family.denoiser(family.modules))


@pytest.mark.parametrize("sampler,option", OPTIONS, ids=[f"{s}-{o.name}" for s, o in OPTIONS])
def test_generate_checks_sampler_options(toy_ddpm, sampler, option):
    """Every declared option is accepted by generate at its default (the same samples as leaving it out) and at
    another value its rule allows (with SamplerInfo.nfe evaluations for those options); a value outside the
    rule is refused with one line naming the option, before any network evaluation."""
    den, info, name = toy_ddpm, SAMPLER_INFO[sampler], option.name
    defaults = {o.name: o.default for o in info.options}
    grid_steps = len(time_grid(den.schedule, STEPS, "leading")) - 1

    def run(**kw):
        den.nfe = 0
        return generate(den, N, (2,), sampler=sampler, steps=STEPS, seed=0, **kw)

    assert option.accepts(option.default)
    assert torch.equal(run(**{name: option.default}), run())
    v = other_valid(option)
    assert option.accepts(v) and v != option.default
    x = run(**{name: v})
    assert x.shape == (N, 2) and torch.isfinite(x).all()
    assert den.nfe == info.nfe(grid_steps, {**defaults, name: v})
    for bad in outside_rule(option):
        assert not option.accepts(bad), bad
        with pytest.raises(TrilemmaError) as e:
            run(**{name: bad})
        msg = str(e.value)
        assert "\n" not in msg and name in msg and repr(bad) in msg, msg
        assert den.nfe == 0


@pytest.mark.parametrize("sampler", list(SAMPLER_INFO))
def test_generate_refuses_another_samplers_option(toy_ddpm, sampler):
    """An option the sampler does not declare is refused whatever its value (its default too), naming it."""
    own = {o.name for o in SAMPLER_INFO[sampler].options}
    for name, o in all_sampler_options().items():
        if name in own:
            continue
        with pytest.raises(TrilemmaError, match=f"{name}: not an option of sampler {sampler}"):
            generate(toy_ddpm, N, (2,), sampler=sampler, steps=STEPS, **{name: o.default})


def test_sampler_options_accept_numpy_scalars_and_refuse_huge_numbers():
    """An option's value may be a NumPy scalar of the right kind (as from a NumPy grid of etas); an integer beyond
    float's range is refused with the option's one-line error, not an OverflowError."""
    got = check_sampler_options("ddim", {"eta": np.float32(0.5), "clip_x0": np.bool_(True)}, "")
    assert got == {"eta": 0.5, "clip_x0": True} and type(got["eta"]) is float and type(got["clip_x0"]) is bool
    assert check_sampler_options("langevin", {"steps_per_level": np.int64(3)}, "")["steps_per_level"] == 3
    with pytest.raises(TrilemmaError, match="step_size must be a number > 0"):
        check_sampler_options("langevin", {"step_size": 10**400}, "")
    with pytest.raises(TrilemmaError, match="steps_per_level must be an integer"):
        check_sampler_options("langevin", {"steps_per_level": np.float64(2.0)}, "")

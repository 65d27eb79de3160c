"""Latent diffusion: the autoencoder first stage, its latent scale, latent models and the Langevin sampler."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from helpers import DIGITS, assert_one_line_error, run, write_config
from trilemma.checkpoint import load_checkpoint
from trilemma.config import AutoencoderConfig, load_config
from trilemma.data import load_dataset
from trilemma.errors import TrilemmaError
from trilemma.families import build_family
from trilemma.loading import autoencoder_from_checkpoint, sampler_from_checkpoint
from trilemma.families.autoencoder import measure_latent_scale, psnr
from trilemma.families.latent import autoencoder_sha256
from trilemma.networks import build_autoencoder
from trilemma.bounds import gaussian_kl
from trilemma.samplers import generate, sample_langevin
from trilemma.schedules import Cosine, LinearBeta, LinearGamma, alpha_sigma, time_grid
from trilemma.training import train

AE = {
    "family": "autoencoder",
    "data": {"name": "digits"},
    "autoencoder": {"channels": [8, 16], "latent_channels": 2, "norm_groups": 4, "pad": 0, "scale_images": 300},
    "train": {"steps": 3, "batch_size": 16, "lr": 1e-3, "warmup": 1, "save_every": 0},
}
LATENT = {
    "family": "ddpm",
    "data": {"name": "digits"},
    "model": {"channels": [16, 32], "attention": [False, True], "norm_groups": 8},
    "train": {"steps": 2, "batch_size": 16, "lr": 1e-3, "warmup": 1, "save_every": 0},
    "sample": {"sampler": "ddim", "steps": 3, "n": 4},
}




@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
    """A tiny digits autoencoder (f = 2, 2x4x4 latents), trained for 3 steps."""
    d = tmp_path_factory.mktemp("ae")
    train(load_config(write_config(d / "ae.yaml", AE)), d / "ae", progress=False)
    return d / "ae"


def _latent_run(tmp_path, ae_dir, name="latent", **sections):
    cfg = write_config(tmp_path / f"{name}.yaml", LATENT, latent={"autoencoder": str(ae_dir)}, **sections)
    train(load_config(cfg), tmp_path / name, progress=False)
    return tmp_path / name


def _images(n=6, shape=(1, 28, 28), seed=0):
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- the first stage ------------------------------------------------------------------------------


def test_autoencoder_shapes_on_padded_fashion_mnist():
    """28x28 images padded by 2 with f = 4 give 8x8 latents; decoding crops back to 28x28."""
    torch.manual_seed(0)
    ae = build_autoencoder(AutoencoderConfig(channels=[8, 8, 8], norm_groups=4, latent_channels=4, pad=2), (1, 28, 28))
    x = _images()
    mean, logvar = ae.posterior(x)
    assert ae.factor == 4 and ae.latent_shape == (4, 8, 8)
    assert mean.shape == logvar.shape == (6, 4, 8, 8)
    assert ae.encode(x).shape == (6, 4, 8, 8) and ae.decode(ae.encode(x)).shape == (6, 1, 28, 28)
    rec, m2, _ = ae(x, torch.randn(6, 4, 8, 8))
    assert rec.shape == x.shape and torch.equal(m2, mean)
    with pytest.raises(TrilemmaError, match=r"images of shape \(1, 32, 32\), expected \(1, 28, 28\)"):
        ae.encode(_images(shape=(1, 32, 32)))
    with pytest.raises(TrilemmaError, match="not divisible by the downsampling factor 4"):
        build_autoencoder(AutoencoderConfig(channels=[8, 8, 8], norm_groups=4, pad=1), (1, 28, 28))


def test_latent_scale_round_trip():
    """encode = scale * posterior mean, decode divides the scale out again (exactly), and the scale
    measured on a set makes that set's latents unit-std."""
    torch.manual_seed(0)
    ae = build_autoencoder(AutoencoderConfig(channels=[8, 16], norm_groups=4, latent_channels=3, pad=0), (1, 8, 8)).eval()
    x = _images(200, (1, 8, 8))
    with torch.no_grad():
        mean, _ = ae.posterior(x)
        scale = measure_latent_scale(ae, x, batch_size=64)
        # encoder batches of 64 against one of 200: equal up to float32 rounding of the batched convolutions
        assert scale == pytest.approx(1.0 / mean.double().std().item(), rel=1e-5)
        assert ae.latent_scale.item() == 1.0, "measuring leaves the stored scale alone"
        ae.latent_scale.fill_(scale)
        z = ae.encode(x)
        assert z.double().std().item() == pytest.approx(1.0, abs=1e-5)
        torch.testing.assert_close(z, mean * scale)
        torch.testing.assert_close(ae.decode(z), ae.decode_raw(mean), rtol=1e-5, atol=1e-5)


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mean, logvar = torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 2, 3, 3, generator=g)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_kl(mean, logvar), ref)


def test_trained_autoencoder_saves_its_latent_scale(ae_run):
    """The checkpoint's named latent_scale equals its weight, and makes the training latents unit-std."""
    ck = load_checkpoint(ae_run)
    assert ck.meta["latent_scale"] == pytest.approx(ck.weights["ae.latent_scale"].item(), rel=1e-7)
    assert ck.meta["latent_shape"] == [2, 4, 4] and ck.meta["data_shape"] == [1, 8, 8]
    ae = autoencoder_from_checkpoint(ck)
    with torch.no_grad():
        z = ae.encode(load_dataset(ck.cfg.data, "train").x[:300])
    assert z.double().std().item() == pytest.approx(1.0, abs=1e-4)
    assert list((ae_run / "samples").glob("*.png")), "a data / reconstruction grid"
    with pytest.raises(TrilemmaError, match="first stage with no sampler"):
        sampler_from_checkpoint(ck)


def test_eval_recon_reports_psnr_and_fd(ae_run, tmp_path):
    res = run("eval", ae_run, "--recon", "-n", 40, "--json", tmp_path / "r.json", "--quiet")
    assert res.exit_code == 0, res.output
    assert "PSNR (dB)" in res.output and "FD-digits of reconstructions" in res.output
    out = json.loads((tmp_path / "r.json").read_text())
    ck = load_checkpoint(ae_run)
    ae = autoencoder_from_checkpoint(ck)
    x = load_dataset(ck.cfg.data, "test").x[:40]
    with torch.no_grad():
        expected = psnr(ae.decode(ae.encode(x)), x).mean().item()
    assert out["psnr"] == pytest.approx(expected, rel=1e-5) and out["images"] == 40 and out["fd"] >= 0
    assert_one_line_error(run("eval", ae_run, "--bpd"), "no likelihood bound")


def test_autoencoder_exports_to_diffusers(ae_run, tmp_path):
    """The exported AutoencoderKL reproduces our encoder mean and decoder; scaling_factor is the latent scale."""
    from diffusers import AutoencoderKL

    res = run("export", ae_run, tmp_path / "vae", "--format", "diffusers")
    assert res.exit_code == 0 and "AutoencoderKL" in res.output, res.output
    vae = AutoencoderKL.from_pretrained(str(tmp_path / "vae")).eval()
    ck = load_checkpoint(ae_run)
    ae = autoencoder_from_checkpoint(ck)
    assert vae.config.scaling_factor == pytest.approx(ck.meta["latent_scale"])
    x = load_dataset(ck.cfg.data, "test").x[:5]
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
        torch.testing.assert_close(z, ae.encode(x))
        torch.testing.assert_close(vae.decode(z / vae.config.scaling_factor).sample, ae.decode(z))
    assert_one_line_error(run("export", ae_run, tmp_path / "vae"), "not empty")


def test_psnr_closed_form():
    x = torch.zeros(2, 1, 4, 4)
    y = x + torch.tensor([0.1, 0.2]).view(2, 1, 1, 1)
    torch.testing.assert_close(psnr(x, y), 10 * torch.log10(4 / torch.tensor([0.01, 0.04], dtype=torch.float64)))


# --- latent models ---------------------------------------------------------------------------------


def test_latent_ddpm_trains_on_latents_and_samples_images(ae_run, tmp_path):
    run_dir = _latent_run(tmp_path, ae_run)
    ck = load_checkpoint(run_dir)
    assert ck.meta["sample_shape"] == [2, 4, 4] and ck.meta["data_shape"] == [1, 8, 8]
    assert ck.meta["autoencoder"]["sha256"] == autoencoder_sha256(load_checkpoint(ae_run))
    den, decode = sampler_from_checkpoint(ck)
    z = generate(den, 4, ck.sample_shape, sampler="ddim", steps=3, seed=5)
    assert z.shape == (4, 2, 4, 4)
    ae = autoencoder_from_checkpoint(load_checkpoint(ae_run))
    with torch.no_grad():
        torch.testing.assert_close(decode(z), ae.decode(z))
    res = run("sample", run_dir, "--steps", 3, "-n", 4, "--seed", 5, "--out", tmp_path / "s.png")
    assert res.exit_code == 0, res.output
    saved = np.load(tmp_path / "s.npz")["samples"]
    assert saved.shape == (4, 1, 8, 8)
    np.testing.assert_allclose(saved, decode(z).numpy(), rtol=1e-5, atol=1e-5)
    assert_one_line_error(run("eval", run_dir, "--bpd"), "latent model's bound")


def _train_weights(run_dir):
    ck = run_dir / "checkpoint"
    return {**load_file(str(ck / "model.safetensors")), **load_file(str(ck / "train.safetensors"))}


def test_latent_training_resumes_exactly_and_caching_changes_nothing(ae_run, tmp_path):
    """A latent run stopped after 2 steps and resumed to 4 equals 4 straight steps (every tensor); encoding
    the batch every step (latent.cache: false) trains the same weights as the cached latents, to float
    rounding (the encoder sees batches of 16 instead of 500)."""
    cfg = write_config(tmp_path / "l.yaml", LATENT, latent={"autoencoder": str(ae_run), "cache": False},
                       train={"steps": 4})
    train(load_config(cfg), tmp_path / "straight", progress=False)
    train(load_config(cfg, ["train.steps=2"]), tmp_path / "resumed", progress=False)
    train(load_config(cfg), tmp_path / "resumed", resume=True, progress=False)
    a, b = _train_weights(tmp_path / "straight"), _train_weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    train(load_config(cfg, ["latent.cache=true"]), tmp_path / "cached", progress=False)
    c = _train_weights(tmp_path / "cached")
    lr, steps = load_config(cfg).train.lr, 4
    for k in a:
        if k.startswith("net."):
            # the latents are encoded in batches of 500 (cached) or 16: the same up to float rounding. An
            # attention key bias has a gradient that is zero in exact arithmetic (softmax ignores a constant
            # shift), so it trains on rounding noise, which Adam scales to steps of up to lr: bounded, not equal
            atol = 2 * steps * lr if k.endswith("to_k.bias") else 1e-5
            torch.testing.assert_close(a[k], c[k], rtol=1e-4, atol=atol)


@pytest.mark.parametrize("family", ["vdm", "ddgan"])
def test_latent_vdm_and_ddgan_train_and_sample_images(ae_run, tmp_path, family):
    sections = {
        "vdm": {"family": "vdm", "schedule": {"name": "learned", "hidden": 8}, "vdm": {"fourier": False},
                "sample": {"sampler": "ancestral", "steps": 3, "n": 4}},
        "ddgan": {"family": "ddgan", "schedule": {"name": "vp-sde-grid", "num_timesteps": 2},
                  "gan": {"latent_dim": 4, "d_channels": [16, 32], "tanh": False},
                  "train": {"warmup": 0, "grad_clip": 0.0}, "sample": {"sampler": "ddpm", "steps": 2, "n": 4}},
    }[family]
    run_dir = _latent_run(tmp_path, ae_run, family, **sections)
    ck = load_checkpoint(run_dir)
    assert ck.meta["sample_shape"] == [2, 4, 4] and ck.meta["family"] == family
    steps = sections["sample"]["steps"]
    res = run("sample", run_dir, "--sampler", sections["sample"]["sampler"], "--steps", steps, "-n", 3,
              "--out", tmp_path / "s.png")
    assert res.exit_code == 0, res.output
    x = np.load(tmp_path / "s.npz")["samples"]
    assert x.shape == (3, 1, 8, 8) and np.isfinite(x).all()
    if family == "ddgan":
        assert_one_line_error(run("sample", run_dir, "--sampler", "langevin", "--steps", 2, "--out", tmp_path / "l.png"),
                              "DDGAN generator")


def test_autoencoder_with_padding_trains_and_crops(tmp_path):
    """pad 4 around 8x8 digits: 16x16 into the encoder (f = 2, 8x8 latents), 8x8 reconstructions out."""
    cfg = write_config(tmp_path / "ae.yaml", AE, autoencoder={"pad": 4}, train={"steps": 2})
    train(load_config(cfg), tmp_path / "ae", progress=False)
    assert load_checkpoint(tmp_path / "ae").meta["latent_shape"] == [2, 8, 8]
    res = run("eval", tmp_path / "ae", "--recon", "-n", 20, "--json", tmp_path / "r.json", "--quiet")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r.json").read_text())["latent_shape"] == [2, 8, 8]


def test_latent_checkpoint_refuses_a_different_autoencoder(ae_run, tmp_path):
    """The autoencoder's weights, or an architecture setting that leaves the weight shapes alone, changed
    after the latent model was trained: loading, sampling and resuming all stop with one line that names
    the hash mismatch; nothing is overwritten."""
    ae_copy = tmp_path / "ae"
    shutil.copytree(ae_run, ae_copy)
    run_dir = _latent_run(tmp_path, ae_copy)
    meta_path = ae_copy / "checkpoint/config.json"
    original = meta_path.read_text()
    meta = json.loads(original)
    meta["config"]["autoencoder"]["norm_groups"] = 2  # GroupNorm(2, C) has the weights of GroupNorm(4, C)
    meta_path.write_text(json.dumps(meta))
    load_checkpoint(ae_copy)  # a valid autoencoder checkpoint in itself
    with pytest.raises(TrilemmaError, match="SHA-256"):
        sampler_from_checkpoint(load_checkpoint(run_dir))
    meta_path.write_text(original)
    sampler_from_checkpoint(load_checkpoint(run_dir))  # the original again: accepted
    weights = ae_copy / "checkpoint/model.safetensors"
    w = load_file(str(weights))
    w["ae.vae.decoder.conv_out.bias"] = w["ae.vae.decoder.conv_out.bias"] + 0.1
    save_file(w, str(weights), metadata={"format": "trilemma-checkpoint"})
    with pytest.raises(TrilemmaError, match="SHA-256"):
        sampler_from_checkpoint(load_checkpoint(run_dir))
    before = (run_dir / "checkpoint/model.safetensors").read_bytes()
    assert_one_line_error(run("sample", run_dir, "--steps", 2, "-n", 2, "--out", tmp_path / "x.png"), "SHA-256")
    cfg = write_config(tmp_path / "latent.yaml", LATENT, latent={"autoencoder": str(ae_copy)}, train={"steps": 4})
    assert_one_line_error(run("train", cfg, "--out", run_dir, "--resume", "--quiet"), "SHA-256")
    assert (run_dir / "checkpoint/model.safetensors").read_bytes() == before


def test_latent_model_needs_an_autoencoder_checkpoint(tmp_path):
    pixel = tmp_path / "pixel"
    train(load_config(write_config(tmp_path / "d.yaml", DIGITS)), pixel, progress=False)
    cfg = write_config(tmp_path / "l.yaml", LATENT, latent={"autoencoder": str(pixel)})
    assert_one_line_error(run("train", cfg, "--out", tmp_path / "l", "--quiet"), "is a ddpm checkpoint, not an autoencoder")
    cfg = write_config(tmp_path / "m.yaml", LATENT, latent={"autoencoder": str(tmp_path / "nowhere")})
    assert_one_line_error(run("train", cfg, "--out", tmp_path / "m", "--quiet"), "no such file or directory")


def test_latent_vdm_and_ddgan_settings(ae_run, tmp_path):
    """A latent VDM uses a continuous decoder and no pixel-level Fourier features; a latent DDGAN has an
    unbounded generator output. The wrong settings are refused with the key to change."""
    vdm = {"family": "vdm", "schedule": {"name": "learned", "hidden": 8}, "latent": {"autoencoder": str(ae_run)}}
    with pytest.raises(TrilemmaError, match="vdm.fourier: false"):
        build_family(load_config(write_config(tmp_path / "v.yaml", LATENT, **vdm)), (1, 8, 8))
    fam = build_family(load_config(write_config(tmp_path / "v.yaml", LATENT, vdm={"fourier": False}, **vdm)), (1, 8, 8))
    assert fam.sample_shape == (2, 4, 4) and fam.inner.levels is None
    gan = {"family": "ddgan", "schedule": {"name": "vp-sde-grid", "num_timesteps": 2},
           "gan": {"latent_dim": 4, "d_channels": [16, 32]}, "latent": {"autoencoder": str(ae_run)}}
    with pytest.raises(TrilemmaError, match="gan.tanh: false"):
        build_family(load_config(write_config(tmp_path / "g.yaml", LATENT, **gan)), (1, 8, 8))
    gan["gan"]["tanh"] = False
    fam = build_family(load_config(write_config(tmp_path / "g.yaml", LATENT, **gan)), (1, 8, 8))
    gen = fam.modules["gen"]
    with torch.no_grad():
        gen.unet.conv_out.weight.mul_(100.0)  # large raw outputs
        out = gen(torch.randn(3, 2, 4, 4), torch.zeros(3), torch.randn(3, 4))
    assert out.abs().max() > 1, "the latent generator is not squashed into [-1, 1]"


def test_bench_decodes_latent_rows_and_skips_their_bound(ae_run, tmp_path):
    from trilemma.bench import config_from_dict, run_bench

    latent = _latent_run(tmp_path, ae_run)
    pixel = tmp_path / "pixel"
    train(load_config(write_config(tmp_path / "d.yaml", DIGITS)), pixel, progress=False)
    grid = {"rows": [{"checkpoint": str(pixel), "sampler": "ddim", "steps": 2, "label": "pixel"},
                     {"checkpoint": str(latent), "sampler": ["ddim", "langevin"], "steps": 2, "label": "latent"}],
            "num_samples": 40, "batch_size": 20, "bpd_images": 20}
    summary = run_bench(config_from_dict(grid, "grid"), tmp_path / "bench", progress=False)
    rows = {(r["label"], r["sampler"]): r for r in summary["rows"] if not r["floor"]}
    assert "bpd" in rows["pixel", "ddim"] and "bpd" not in rows["latent", "ddim"]
    assert all(np.isfinite(r["FD-digits"]) for r in rows.values())
    assert rows["latent", "langevin"]["nfe"] == 2 + 1 and rows["latent", "langevin"]["steps_per_level"] == 1


# --- annealed Langevin dynamics ------------------------------------------------------------------

MU = torch.tensor([0.5, -0.3], dtype=torch.float64)
SIGMA = torch.tensor([[0.5, 0.3], [0.3, 0.4]], dtype=torch.float64)


class CorrelatedGaussianDenoiser(nn.Module):
    """The exact E[x | z_t] for 2-D x ~ N(MU, SIGMA): MU + a SIGMA (a^2 SIGMA + s^2 I)^-1 (z - a MU)."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule

    def forward(self, z, t):
        a, s = alpha_sigma(self.schedule, torch.as_tensor(t, dtype=torch.float64))
        gain = a * SIGMA @ torch.linalg.inv(a**2 * SIGMA + s**2 * torch.eye(2, dtype=torch.float64))
        return (MU + (z.double() - a * MU) @ gain.T).to(z.dtype)


@pytest.mark.parametrize("schedule", [LinearBeta(1000), Cosine()], ids=["linear-beta", "cosine"])
def test_langevin_with_the_exact_score_reaches_the_gaussian(schedule):
    """With score = -eps_hat / sigma exact, annealed Langevin (100 levels x 10 steps, denoised at the end)
    gives N(MU, SIGMA): mean and covariance within 4 standard errors (n = 20,000); one step per level does not."""
    den = CorrelatedGaussianDenoiser(schedule)
    ts = time_grid(schedule, 100, "logsnr")
    x_T = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sample_langevin(den, schedule, x_T, ts, steps_per_level=10, step_size=0.5,
                          generator=torch.Generator().manual_seed(1))
    n = len(out)
    se_mean = (SIGMA.diagonal() / n).sqrt()
    se_cov = ((SIGMA.diagonal()[:, None] * SIGMA.diagonal()[None] + SIGMA**2) / n).sqrt()  # Var of a sample covariance
    assert ((out.mean(0) - MU).abs() < 4 * se_mean).all(), f"mean {out.mean(0).tolist()}"
    assert ((torch.cov(out.T) - SIGMA).abs() < 4 * se_cov).all(), f"covariance {torch.cov(out.T).tolist()}"
    short = sample_langevin(den, schedule, x_T, ts, steps_per_level=1, step_size=0.05,
                            generator=torch.Generator().manual_seed(1))
    assert ((short.mean(0) - MU).abs() > 4 * se_mean).any(), "too few steps do not reach the target"


def test_langevin_counts_and_options():
    """levels x steps_per_level evaluations plus one to denoise; without denoising, the chain itself."""
    from trilemma.denoiser import CountNFE

    s = LinearBeta(1000)
    den = CountNFE(CorrelatedGaussianDenoiser(s))
    ts = time_grid(s, 7, "logsnr")
    seen = []
    sample_langevin(den, s, torch.randn(5, 2, dtype=torch.float64), ts, steps_per_level=3, callback=seen.append)
    assert den.nfe == 7 * 3 + 1 and [d["i"] for d in seen] == list(range(22))
    with pytest.raises(ValueError, match="steps_per_level"):
        sample_langevin(den, s, torch.zeros(1, 2), ts, steps_per_level=0)
    # a VDM schedule has sigma_0 > 0, but t = 0 is still not a level: 7 levels for 7 steps
    g = LinearGamma()
    den = CountNFE(CorrelatedGaussianDenoiser(g))
    sample_langevin(den, g, torch.randn(5, 2, dtype=torch.float64), time_grid(g, 7, "logsnr"), steps_per_level=2)
    assert den.nfe == 7 * 2 + 1

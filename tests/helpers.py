"""Small configs shared by the tests (seconds on a CPU)."""

from pathlib import Path

import yaml
from click.testing import CliRunner

TOY = {
    "family": "ddpm",
    "data": {"name": "toy2d", "toy": "grid25", "n": 2048},
    "model": {"prediction": "eps", "hidden": 32, "depth": 2},
    "train": {"steps": 6, "batch_size": 64, "lr": 1e-3, "warmup": 2, "save_every": 0, "log_every": 1},
    "sample": {"sampler": "ddim", "steps": 5, "n": 64},
}

TOY_GAN = {
    "family": "ddgan",
    "data": {"name": "toy2d", "toy": "grid25", "n": 2048},
    "schedule": {"name": "vp-sde-grid", "num_timesteps": 4},
    "model": {"hidden": 32, "depth": 2},
    "gan": {"latent_dim": 4, "d_hidden": 32, "d_depth": 2, "d_fourier": 2, "r1_gamma": 0.05, "lazy_reg": 2},
    "train": {"steps": 6, "batch_size": 64, "warmup": 0, "grad_clip": 0.0, "save_every": 0, "log_every": 1},
    "sample": {"sampler": "ddpm", "steps": 4, "n": 64},
}

TOY_VDM = {
    "family": "vdm",
    "data": {"name": "toy2d", "toy": "grid25", "n": 2048},
    "schedule": {"name": "learned", "hidden": 16},
    "model": {"hidden": 32, "depth": 2},
    "vdm": {"fourier": False},
    "train": {"steps": 6, "batch_size": 64, "lr": 1e-3, "warmup": 2, "save_every": 0, "log_every": 1},
    "sample": {"sampler": "ddpm", "steps": 5, "n": 64},
}

DIGITS_GAN = {
    "family": "ddgan",
    "data": {"name": "digits"},
    "schedule": {"name": "vp-sde-grid", "num_timesteps": 2},
    "model": {"channels": [16, 32], "attention": [False, False], "norm_groups": 8},
    "gan": {"latent_dim": 8, "d_channels": [16, 32]},
    "train": {"steps": 2, "batch_size": 8, "warmup": 0, "save_every": 0},
    "sample": {"sampler": "ddpm", "steps": 2, "n": 4},
}

DIGITS = {
    "family": "ddpm",
    "data": {"name": "digits"},
    "model": {"prediction": "v", "channels": [16, 32], "attention": [False, True], "norm_groups": 8},
    "train": {"steps": 2, "batch_size": 16, "lr": 1e-3, "warmup": 1, "save_every": 0},
    "sample": {"sampler": "ddim", "steps": 5, "n": 4},
}


def write_config(path: Path, cfg: dict, **sections) -> Path:
    """Write cfg (with sections updated: write_config(p, TOY, train={"steps": 3})) as YAML."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg.items()}
    for k, v in sections.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) else v
    path.write_text(yaml.safe_dump(out))
    return path


def run(*args):
    """`trilemma ARGS` in-process; exceptions other than the CLI's own exits propagate."""
    from trilemma.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(res, *fragments):
    """Bad input: exit code 2 and a single line on the output, containing every fragment."""
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def random_checkpoint(tmp_path: Path, base: dict, shape: tuple, name: str = "ck", scale_out=None) -> Path:
    """A checkpoint of config `base` with freshly initialised weights (seed 0), saved in tmp_path/name; `scale_out`
    may rescale the network's last layer in place so samples stay in range."""
    import torch

    from trilemma.checkpoint import save_checkpoint
    from trilemma.config import load_config
    from trilemma.families import build_family

    cfg = load_config(write_config(tmp_path / f"{name}.yaml", base))
    torch.manual_seed(0)
    fam = build_family(cfg, shape)
    if scale_out is not None:
        with torch.no_grad():
            scale_out(fam.modules["net"])
    return save_checkpoint(tmp_path / name, cfg=cfg, sample_shape=shape, step=0, ema_state=fam.modules.state_dict())

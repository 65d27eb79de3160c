"""`trilemma demo`: the benchmark grid on the 25-Gaussian toy, from checkpoints shipped in the package.

The shipped checkpoints live in trilemma/assets/<name>/ (config.json + model.safetensors, EMA weights
only): toy2d-ddpm, toy2d-ddgan (T = 4), toy2d-ddgan-t1 (the T = 1 ablation) and toy2d-progressive (a 2-step
student of toy2d-ddpm, round 5 of configs/toy2d-progressive.yaml). `trilemma demo --retrain` trains them anew from
the same config.json files (`trilemma train configs/toy2d-ddpm.yaml` and configs/toy2d-ddgan.yaml, with `--set
schedule.num_timesteps=1 --set sample.steps=1 --set gan.d_raw_input=true` for T = 1; the student from the
retrained DDPM); BENCHMARKS.md gives their SHA-256 and training commands.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import TrilemmaError

SHIPPED = ("toy2d-ddpm", "toy2d-ddgan", "toy2d-ddgan-t1", "toy2d-progressive")  # a student after its teacher


def shipped_checkpoint(name: str) -> Path:
    """The directory of a checkpoint shipped with the package."""
    if name not in SHIPPED:
        raise TrilemmaError(f"no shipped checkpoint {name!r}; shipped: {', '.join(SHIPPED)}")
    p = Path(str(resources.files("trilemma") / "assets" / name))
    if not (p / "model.safetensors").is_file():
        raise TrilemmaError(f"{p}: shipped checkpoint missing (reinstall, or run `trilemma demo --retrain`)")
    return p


def demo_grid(checkpoints: dict[str, str | Path], num_samples: int = 2500, device: str | None = None) -> dict:
    """The demo's bench grid from {shipped name: checkpoint directory}: the DDPM toy on the ancestral sampler,
    DDIM (eta 0 and 1) and DPM-Solver++(2M) at several step counts, and DDGAN's ancestral sampler at T = 4 and
    at T = 1 (one NFE per step), and the 2-step progressive student of the DDPM on its trailing DDIM grid; one row
    per shipped checkpoint and sampler (`SHIPPED`)."""
    ddpm, ddgan, ddgan_t1, student = (str(checkpoints[name]) for name in SHIPPED)
    return {
        "name": "trilemma demo: 25-Gaussian grid",
        "num_samples": num_samples,
        "batch_size": num_samples,
        "seeds": [0],
        "device": device,
        "rows": [
            {"checkpoint": ddpm, "label": "DDPM", "sampler": "ddpm", "steps": 1000},
            {"checkpoint": ddpm, "label": "DDPM", "sampler": "ddim", "steps": [100, 20, 10, 5], "eta": [0.0, 1.0]},
            {"checkpoint": ddpm, "label": "DDPM", "sampler": "dpmpp", "steps": [20, 10, 5]},
            {"checkpoint": ddgan, "label": "DDGAN T=4", "sampler": "ddpm", "steps": 4},
            {"checkpoint": ddgan_t1, "label": "DDGAN T=1", "sampler": "ddpm", "steps": 1},
            {"checkpoint": student, "label": "progressive-2", "sampler": "ddim", "steps": 2, "spacing": "trailing"},
        ],
    }

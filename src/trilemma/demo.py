"""`trilemma demo`: the benchmark grid on the 25-Gaussian toy, from checkpoints shipped in the package.

The shipped checkpoints live in trilemma/assets/<name>/ (config.json + model.safetensors, EMA weights
only) and are reproduced by `trilemma demo --retrain` (which trains from the same config.json) or by
`trilemma train configs/toy2d-ddpm.yaml`; BENCHMARKS.md gives their SHA-256 and training log.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import TrilemmaError

SHIPPED = ("toy2d-ddpm",)


def shipped_checkpoint(name: str) -> Path:
    """The directory of a checkpoint shipped with the package."""
    if name not in SHIPPED:
        raise TrilemmaError(f"no shipped checkpoint {name!r}; shipped: {', '.join(SHIPPED)}")
    p = Path(str(resources.files("trilemma") / "assets" / name))
    if not (p / "model.safetensors").is_file():
        raise TrilemmaError(f"{p}: shipped checkpoint missing (reinstall, or run `trilemma demo --retrain`)")
    return p


def demo_grid(ddpm_checkpoint: str, num_samples: int = 2500, device: str | None = None) -> dict:
    """DDPM ancestral 1000, DDIM 100/20/10/5 at eta 0 and 1, DPM-Solver++(2M) 20/10/5 (issue 3);
    later families add their rows here."""
    return {
        "name": "trilemma demo: 25-Gaussian grid",
        "num_samples": num_samples,
        "batch_size": num_samples,
        "seeds": [0],
        "device": device,
        "rows": [
            {"checkpoint": ddpm_checkpoint, "label": "DDPM", "sampler": "ddpm", "steps": 1000},
            {"checkpoint": ddpm_checkpoint, "label": "DDPM", "sampler": "ddim", "steps": [100, 20, 10, 5], "eta": [0.0, 1.0]},
            {"checkpoint": ddpm_checkpoint, "label": "DDPM", "sampler": "dpmpp", "steps": [20, 10, 5]},
        ],
    }

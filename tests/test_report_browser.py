"""report.html in headless Chromium: every image loads (issue 3, acceptance 4). Skipped where Debian's
chromium / chromium-driver or selenium are not installed (scripts/report_screenshot.py says how)."""

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import torch

from helpers import TOY, write_config
from trilemma.bench import BenchConfig, run_bench
from trilemma.checkpoint import save_checkpoint
from trilemma.config import load_config
from trilemma.families import build_family

pytestmark = pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver") and importlib.util.find_spec("selenium")),
    reason="needs chromium, chromium-driver and selenium",
)


def test_report_images_load_in_headless_chromium(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from report_screenshot import screenshot

    cfg = load_config(write_config(tmp_path / "t.yaml", TOY))
    torch.manual_seed(0)
    fam = build_family(cfg, (2,))
    ck = save_checkpoint(tmp_path / "ck", cfg=cfg, sample_shape=(2,), step=0, ema_state=fam.modules.state_dict())
    run_bench(BenchConfig(num_samples=64, batch_size=64, rows=[{"checkpoint": str(ck), "sampler": "ddim", "steps": [2, 3]}]),
              tmp_path / "out", progress=False)
    images = screenshot(tmp_path / "out" / "report.html", tmp_path / "shot.png")
    assert len(images) == 1 + 3, images  # pareto plot, the data and two rows
    assert all(ok and w > 100 and h > 100 for _, ok, w, h in images), images
    assert (tmp_path / "shot.png").stat().st_size > 10_000

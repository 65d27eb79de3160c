"""`trilemma bench` and `trilemma demo`: grid parsing, every output file, the floor row, NFE per row,
paired noise across rows, and one-line errors for bad grids."""

import csv
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from helpers import DIGITS, TOY, random_checkpoint
from trilemma.bench import BenchConfig, config_from_dict, expand_rows, load_grid, run_bench
from trilemma.samplers import SAMPLER_INFO
from trilemma.cli import main
from trilemma.errors import TrilemmaError


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_rows_expand_as_a_product_and_bad_rows_are_named(tmp_path):
    cfg = config_from_dict({"rows": [
        {"checkpoint": "a", "sampler": "ddim", "steps": [10, 5], "eta": [0, 1]},
        {"checkpoint": "a", "sampler": ["ddpm", "dpmpp"], "steps": 4},
    ]}, "grid.yaml")
    rows = expand_rows(cfg)
    assert [(r.sampler, r.steps, r.sampler_options.get("eta"), r.spacing) for r in rows] == [
        ("ddim", 10, 0.0, "leading"), ("ddim", 10, 1.0, "leading"), ("ddim", 5, 0.0, "leading"),
        ("ddim", 5, 1.0, "leading"), ("ddpm", 4, None, "leading"), ("dpmpp", 4, None, "linspace")]
    # every row carries all of its sampler's options (defaults filled in), and only those
    assert all(set(r.sampler_options) == {o.name for o in SAMPLER_INFO[r.sampler].options} for r in rows)
    assert len({r.key for r in rows}) == len(rows)
    bad = [
        ({"checkpoint": "a", "sampler": "ddim", "steps": 5, "etaa": 1}, "rows[0]: unknown key 'etaa'"),
        ({"checkpoint": "a", "sampler": "heun", "steps": 5}, "sampler 'heun'"),
        ({"checkpoint": "a", "sampler": "ddim", "steps": 0}, "steps must be a positive integer"),
        ({"checkpoint": "a", "sampler": "dpmpp", "steps": 5, "eta": 1}, "eta is not an option of sampler dpmpp"),
        ({"checkpoint": "a", "sampler": "dpmpp", "steps": 5, "eta": 0}, "eta is not an option of sampler dpmpp"),
        ({"checkpoint": "a", "sampler": "ddim"}, "missing key 'steps'"),
        ({"checkpoint": "a", "sampler": "ddim", "steps": [5, 5]}, "repeat the same"),
    ]
    for row, fragment in bad:
        with pytest.raises(TrilemmaError, match=re.escape(fragment)):
            expand_rows(config_from_dict({"rows": [row]}, "grid.yaml"))
    for extra, fragment in [({"samples": 5}, "grid.yaml: unknown config key 'samples'"),
                            ({"num_samples": "many"}, "num_samples must be an integer"),
                            ({"seeds": ["a"]}, "seeds[0] must be an integer"), ({"seeds": []}, "seeds must be an integer or a non-empty list"),
                            ({"features": "clip"}, "features must be one of auto, inception, got 'clip'")]:
        with pytest.raises(TrilemmaError, match=re.escape(fragment)):
            config_from_dict({"rows": [{}], **extra}, "grid.yaml")


def test_bad_grid_files_are_one_line_errors(tmp_path):
    (tmp_path / "g.yaml").write_text("rows: [\n")
    for path, fragment in [(tmp_path / "none.yaml", "grid file not found"), (tmp_path / "g.yaml", "not valid YAML")]:
        res = run("bench", path, "--out", tmp_path / "o")
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and fragment in res.output, res.output
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"rows": [{"checkpoint": "nowhere", "sampler": "ddim", "steps": 2}]}))
    res = run("bench", tmp_path / "g.yaml", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "nowhere: no such file or directory" in res.output, res.output


def test_toy_bench_writes_every_output(tmp_path):
    ck = random_checkpoint(tmp_path, TOY, (2,))
    grid = {"name": "toy test", "num_samples": 300, "batch_size": 128, "rows": [
        {"checkpoint": "ck", "label": "tiny", "sampler": "ddim", "steps": [5, 2], "eta": [0, 1]},
        {"checkpoint": str(ck), "label": "tiny", "sampler": "dpmpp", "steps": 3},
        {"checkpoint": "ck", "label": "tiny", "sampler": "ddpm", "steps": 4},
    ]}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    out = tmp_path / "out"
    res = run("bench", tmp_path / "grid.yaml", "--out", out, "--quiet")
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "results.json").read_text())
    rows = summary["rows"]
    assert len(rows) == 1 + 6 and rows[0]["floor"] and not any(r["floor"] for r in rows[1:])
    # NFE per batch is the number of grid steps for all three samplers
    assert [r["nfe"] for r in rows[1:]] == [5, 5, 2, 2, 3, 4]
    # the data's own score: every grid mode found, ~98.9 % of a 2-D Gaussian lies within 3 std
    assert rows[0]["modes"] == 25 and 97.0 < rows[0]["high_quality_%"] <= 100.0, rows[0]
    for r in rows[1:]:
        assert r["seconds"] > 0 and r["samples_per_second"] > 0 and 0 <= r["modes"] <= 25
        assert (out / r["image"]).is_file()
        # an untrained 32-wide MLP is far from the data: the floor beats it
        assert r["SW"] > rows[0]["SW"], (r["key"], r["SW"], rows[0]["SW"])
    env = summary["environment"]
    assert env["torch"] == torch.__version__ and env["device"].startswith("cpu")
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 7 and {"commit", "device", "torch", "nfe", "seconds", "modes", "high_quality_%"} <= set(table[0])
    md = (out / "results.md").read_text()
    assert md.count("\n| ") == 1 + 7 and "DPM-Solver++(2M)" in md and "high-quality %" in md
    html = (out / "report.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert "pareto.png" in srcs and len(srcs) == 1 + 7
    assert all((out / s).is_file() and (out / s).stat().st_size > 1000 for s in srcs)
    assert "Summary" not in res.output and f"report: {out / 'report.html'}" in res.output


def test_rows_share_noise_and_reruns_are_identical(tmp_path):
    ck = random_checkpoint(tmp_path, TOY, (2,))
    rows = [{"checkpoint": str(ck), "sampler": ["ddim", "ddpm"], "steps": 3}]  # deterministic and stochastic
    cfg = BenchConfig(num_samples=64, batch_size=64, rows=rows)
    a = run_bench(cfg, tmp_path / "a", progress=False)
    b = run_bench(BenchConfig(num_samples=64, batch_size=16, rows=rows), tmp_path / "b", progress=False)
    timing = ("seconds", "seconds_per_batch", "samples_per_second")
    # batch size changes timing only: every sample's noise (x_T and, for DDPM, each step's) depends on (seed,
    # index) alone, so the samples agree up to the float rounding of a batched matmul (a width-32 float32 MLP,
    # 3 steps: ~1e-6 relative), and so do the scores, to 1e-5
    for ra, rb in zip(a["rows"][1:], b["rows"][1:]):
        assert ra.keys() == rb.keys() and ra["sampler"] == rb["sampler"]
        for k in ra:
            if k not in timing:
                assert rb[k] == (pytest.approx(ra[k], rel=1e-5) if isinstance(ra[k], float) else ra[k]), k
    c = run_bench(BenchConfig(num_samples=64, batch_size=64, seeds=[0, 1], rows=rows), tmp_path / "c", progress=False)
    assert "SW_std" in c["rows"][1] and c["rows"][1]["SW"] != a["rows"][1]["SW"]


def test_image_bench_scores_with_the_feature_net(tmp_path):
    ck = random_checkpoint(tmp_path, DIGITS, (1, 8, 8), scale_out=lambda net: net.unet.conv_out.weight.mul_(0.2))
    cfg = BenchConfig(num_samples=100, batch_size=100, rows=[{"checkpoint": str(ck), "sampler": "ddim", "steps": 2}])
    s = run_bench(cfg, tmp_path / "out", progress=False)
    floor, row = s["rows"]
    assert s["quality_metric"] == "FD-digits" and s["diversity_metric"] == "recall"
    for k in ("FD-digits", "KID", "precision", "recall", "density", "coverage", "class_entropy", "class_KL"):
        assert k in floor and k in row, k
    # held-out real digits against the test split: near-perfect support overlap, tiny FD, classes balanced
    assert floor["precision"] > 0.8 and floor["recall"] > 0.8 and floor["class_KL"] < 0.05, floor
    assert row["FD-digits"] > 10 * floor["FD-digits"], (row["FD-digits"], floor["FD-digits"])


def test_inception_features_take_the_same_path(tmp_path, monkeypatch):
    from test_features import StandInInception

    import trilemma.features as F

    monkeypatch.setattr(F, "_fidelity_inception", StandInInception)
    ck = random_checkpoint(tmp_path, DIGITS, (1, 8, 8), scale_out=lambda net: net.unet.conv_out.weight.mul_(0.2))
    cfg = BenchConfig(num_samples=64, batch_size=64, features="inception",
                      rows=[{"checkpoint": str(ck), "sampler": "dpmpp", "steps": 2}])
    s = run_bench(cfg, tmp_path / "out", progress=False)
    assert s["quality_metric"] == "FID" and "FID" in s["metrics"] and "FD-digits" not in s["metrics"]
    assert s["rows"][1]["FID"] > s["rows"][0]["FID"]


def test_a_grid_mixing_datasets_is_refused(tmp_path):
    a = random_checkpoint(tmp_path, TOY, (2,), name="a")
    b = random_checkpoint(tmp_path, {**TOY, "data": {**TOY["data"], "toy": "ring8"}}, (2,), name="b")
    cfg = BenchConfig(num_samples=16, rows=[{"checkpoint": str(a), "sampler": "ddim", "steps": 2},
                                            {"checkpoint": str(b), "sampler": "ddim", "steps": 2}])
    with pytest.raises(TrilemmaError, match="a table compares one dataset"):
        run_bench(cfg, tmp_path / "out", progress=False)


def test_a_toy_in_its_own_coordinates_joins_a_unit_variance_table(tmp_path):
    """A grid25 model trained at the grid's own scale is scored in the first row's (unit-variance)
    coordinates: with the same weights and noise its DDIM samples are the unit-variance model's, so its
    row must score exactly those samples times 1 / sqrt(8)."""
    from trilemma.bench import make_scorer
    from trilemma.checkpoint import load_checkpoint
    from trilemma.loading import denoiser_from_checkpoint
    from trilemma.samplers import generate

    raw = {**TOY, "data": {**TOY["data"], "unit_variance": False}}
    a, b = random_checkpoint(tmp_path, TOY, (2,), name="a"), random_checkpoint(tmp_path, raw, (2,), name="b")
    rows = [{"checkpoint": str(a), "sampler": "ddim", "steps": 2}, {"checkpoint": str(b), "sampler": "ddim", "steps": 2}]
    cfg = BenchConfig(num_samples=256, batch_size=256, rows=rows)
    got = run_bench(cfg, tmp_path / "out", progress=False)["rows"][2]
    ck, cpu = load_checkpoint(a), torch.device("cpu")
    x = generate(denoiser_from_checkpoint(ck, cpu), 256, (2,), sampler="ddim", steps=2, seed=0)
    want = make_scorer(ck.cfg.data, cfg, cpu).score(x * (8 ** -0.5), 0)
    assert {k: got[k] for k in want} == pytest.approx(want)


def test_demo_retrain_trains_every_shipped_model_then_benches_the_new_ones(tmp_path, monkeypatch):
    """`trilemma demo --retrain` plumbing, with training replaced by a copy of the shipped weights (the real
    trainings take about 80 minutes): each shipped config is trained into OUT/<name> in order, the student
    against the retrained teacher, and the bench grid reads the new checkpoints."""
    import shutil

    import trilemma.training
    from trilemma.demo import SHIPPED, shipped_checkpoint

    calls = []

    def fake_train(cfg, out, progress=True):
        calls.append((Path(out).name, cfg))
        shutil.copytree(shipped_checkpoint(Path(out).name), Path(out) / "checkpoint")

    monkeypatch.setattr(trilemma.training, "train", fake_train)
    out = tmp_path / "demo"
    res = run("demo", "--retrain", "--out", out, "-n", "100", "--quiet")
    assert res.exit_code == 0, res.output
    assert [name for name, _ in calls] == list(SHIPPED)
    student = dict(calls)["toy2d-progressive"]
    assert student.distill.teacher == str(out / "toy2d-ddpm" / "checkpoint")
    s = json.loads((out / "results.json").read_text())
    used = {r["checkpoint"] for r in s["rows"][1:]}
    assert used == {str(out / name / "checkpoint") for name in SHIPPED}, used


def test_demo_runs_from_the_shipped_checkpoint(tmp_path):
    res = run("demo", "--out", tmp_path / "demo", "-n", "200", "--quiet")
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "demo" / "results.json").read_text())
    got = [(r["label"], r["sampler"], r["steps"], r["eta"]) for r in s["rows"][1:]]
    want = [("DDPM", "ddpm", 1000, None)] + [("DDPM", "ddim", n, e) for n in (100, 20, 10, 5) for e in (0.0, 1.0)] + \
           [("DDPM", "dpmpp", n, None) for n in (20, 10, 5)] + [("DDGAN T=4", "ddpm", 4, None), ("DDGAN T=1", "ddpm", 1, None)] + \
           [("progressive-2", "ddim", 2, 0.0)]
    assert got == want
    ddim100 = next(r for r in s["rows"] if r["sampler"] == "ddim" and r["steps"] == 100 and r["eta"] == 0)
    assert ddim100["modes"] == 25 and ddim100["high_quality_%"] > 80, ddim100
    assert "| DDPM | DDPM ancestral | 1000 |" in res.output and "report:" in res.output

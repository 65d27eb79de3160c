"""Family distill: a progressive-distillation student of a trained teacher, its pinned teacher and its rounds."""

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import TOY, assert_one_line_error, run, write_config
from trilemma.checkpoint import load_checkpoint
from trilemma.config import load_config
from trilemma.errors import TrilemmaError
from trilemma.families import build_family
from trilemma.loading import denoiser_from_checkpoint
from trilemma.training import train

TEACHER = {**TOY, "model": {"prediction": "v", "hidden": 32, "depth": 2}, "train": {**TOY["train"], "steps": 20}}


def student_config(teacher: Path, student_steps: int = 2, **train_cfg) -> dict:
    steps = student_steps
    return {"family": "distill", "data": TOY["data"], "distill": {"teacher": str(teacher), "student_steps": steps},
            "train": {"steps": 4, "batch_size": 64, "lr": 1e-4, "warmup": 0, "save_every": 0, "log_every": 1,
                      **train_cfg},
            "sample": {"sampler": "ddim", "steps": steps, "spacing": "trailing", "n": 64}}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("teacher")
    train(load_config(write_config(d / "teacher.yaml", TEACHER)), d / "run", progress=False)
    return d / "run"


def _files(root: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def test_the_student_starts_as_its_teacher(teacher, tmp_path):
    cfg = load_config(write_config(tmp_path / "s.yaml", student_config(teacher)))
    family = build_family(cfg, (2,))
    z = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    t = torch.full((32,), 0.75, dtype=torch.float64)
    with torch.no_grad():
        ours = family.denoiser(family.modules)(z, t)
        theirs = denoiser_from_checkpoint(load_checkpoint(teacher))(z, t)
    assert torch.equal(ours, theirs), "the student's weights are the teacher's EMA weights at step 0"
    (ts, tt), = family.grids
    assert ts.tolist() == [1.0, 0.5, 0.0] and tt.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_a_round_trains_samples_in_its_steps_and_is_the_next_rounds_teacher(teacher, tmp_path):
    r1 = tmp_path / "round1"
    assert run("train", write_config(tmp_path / "r1.yaml", student_config(teacher, 2)), "--out", r1,
               "--quiet").exit_code == 0
    meta = load_checkpoint(r1).meta
    assert meta["teacher"]["family"] == "ddpm" and meta["teacher"]["steps"] == 4 and len(meta["teacher"]["sha256"]) == 64
    res = run("sample", r1, "--sampler", "ddim", "--steps", "2", "--spacing", "trailing", "-n", "16", "--quiet",
              "--out", tmp_path / "s.npz")
    assert res.exit_code == 0 and "2 NFE per sample" in res.output, res.output
    # round 2: the round-1 student is the teacher; its student is the same plain model, one step
    r2 = tmp_path / "round2"
    assert run("train", write_config(tmp_path / "r2.yaml", student_config(r1, 1)), "--out", r2,
               "--quiet").exit_code == 0
    assert load_checkpoint(r2).meta["teacher"]["family"] == "distill"
    res = run("sample", r2, "--sampler", "ddim", "--steps", "1", "--spacing", "trailing", "-n", "16", "--quiet",
              "--out", tmp_path / "s2.npz")
    assert res.exit_code == 0 and "1 NFE per sample" in res.output, res.output


def assert_resume_is_exact(cfg_path: Path, tmp_path: Path) -> None:
    """6 steps straight equal 3, then --resume to 6, bit for bit, in model.safetensors and train.safetensors."""
    train(load_config(cfg_path), tmp_path / "straight", progress=False)
    train(load_config(cfg_path, ["train.steps=3"]), tmp_path / "resumed", progress=False)
    train(load_config(cfg_path), tmp_path / "resumed", resume=True, progress=False)
    for name in ("model.safetensors", "train.safetensors"):
        a, b = (load_file(str(tmp_path / r / "checkpoint" / name)) for r in ("straight", "resumed"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_resume_equals_an_uninterrupted_round(teacher, tmp_path):
    assert_resume_is_exact(write_config(tmp_path / "s.yaml", student_config(teacher, 2, steps=6)), tmp_path)


def _train_until(cfg_path: Path, out: Path, stop: int, monkeypatch) -> None:
    """Train as if killed right after the checkpoint of step `stop` (train.steps, and so the rounds, unchanged)."""
    from trilemma.training import _Run

    save = _Run.save

    def save_then_stop(run, x, round_index=None):
        save(run, x, round_index)
        if run.step == stop and round_index is None:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(_Run, "save", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            train(load_config(cfg_path), out, progress=False)
    assert load_checkpoint(out).meta["step"] == stop


def test_rounds_in_one_run_halve_the_grid_and_hand_the_student_on(teacher, tmp_path, monkeypatch):
    """distill.rounds 3 of 2 steps each (train.steps 6), down to 1 step: grids of 4, 2 and 1 steps starting at
    steps 0, 2 and 4; at a round's start the teacher module holds the student's EMA weights of the step before;
    a run killed mid-round (and on a round's boundary) and resumed equals the straight run bit for bit."""
    cfg = student_config(teacher, 1, steps=6, save_every=1)
    cfg["distill"]["rounds"] = 3
    cfg_path = write_config(tmp_path / "s.yaml", cfg)
    family = build_family(load_config(cfg_path), (2,))
    assert family.round_steps == [4, 2, 1] and family.round_starts() == (2, 4)
    assert [family.round_at(k) for k in range(6)] == [0, 0, 1, 1, 2, 2]
    assert [len(ts) - 1 for ts, _ in family.grids] == [4, 2, 1]
    train(load_config(cfg_path), tmp_path / "straight", progress=False)
    assert load_checkpoint(tmp_path / "straight").meta["teacher"]["steps"] == 8  # the first round's teacher grid
    _train_until(cfg_path, tmp_path / "end0", 2, monkeypatch)  # the EMA as round 0 ends
    _train_until(cfg_path, tmp_path / "in1", 3, monkeypatch)  # one step into round 1
    ema = load_file(str(tmp_path / "end0" / "checkpoint" / "model.safetensors"))
    state = load_file(str(tmp_path / "in1" / "checkpoint" / "train.safetensors"))
    assert ema.keys() and all(torch.equal(state[f"modules.teacher.{k}"], v) for k, v in ema.items())
    for name in ("end0", "in1"):
        train(load_config(cfg_path), tmp_path / name, resume=True, progress=False)
        for f in ("model.safetensors", "train.safetensors"):
            a, b = (load_file(str(tmp_path / r / "checkpoint" / f)) for r in ("straight", name))
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (name, f)
    # each round's student as it ended, under the config of a run that stops there: the 2-round run's final
    # checkpoint is rounds/1 of the 3-round run, exactly (the same steps)
    first = tmp_path / "straight" / "rounds" / "0"
    assert load_checkpoint(first).cfg.distill.student_steps == 4 and load_checkpoint(first).meta["step"] == 2
    ck = load_checkpoint(tmp_path / "straight" / "rounds" / "1")
    assert (ck.cfg.distill.rounds, ck.cfg.distill.student_steps, ck.cfg.train.steps, ck.meta["step"]) == (2, 2, 4, 4)
    train(ck.cfg, tmp_path / "two", progress=False)
    a, b = (load_file(str(p / "model.safetensors")) for p in (ck.path, tmp_path / "two" / "checkpoint"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "rounds/1 is the 2-round run"
    res = run("sample", ck.path, "-n", "8", "--quiet", "--out", tmp_path / "r1.npz")
    assert res.exit_code == 0 and "2 NFE per sample" in res.output, res.output  # its own sampler and steps
    # a run of rounds teaches the next student with its network alone (not the round teacher it kept)
    nxt = build_family(load_config(write_config(tmp_path / "n.yaml", student_config(tmp_path / "straight", 1))), (2,))
    ema = load_file(str(tmp_path / "straight" / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(nxt.modules.state_dict()[k], v) for k, v in ema.items())


def test_a_changed_teacher_is_refused_in_one_line_and_nothing_changes(teacher, tmp_path):
    import shutil

    mine = tmp_path / "teacher"
    shutil.copytree(teacher, mine)
    student = tmp_path / "student"
    cfg_path = write_config(tmp_path / "s.yaml", student_config(mine, 2, steps=2))
    assert run("train", cfg_path, "--out", student, "--quiet").exit_code == 0
    # the teacher is trained on: same path, other weights
    assert run("train", write_config(tmp_path / "t.yaml", TEACHER, train={"steps": 22}), "--out", mine, "--resume",
               "--quiet").exit_code == 0
    before = _files(tmp_path)
    for args in (["sample", student, "--steps", "2", "--spacing", "trailing", "--out", tmp_path / "x.npz"],
                 ["train", write_config(tmp_path / "s4.yaml", student_config(mine, 2, steps=4)), "--out", student,
                  "--resume"]):
        res = run(*args, "--quiet")
        assert_one_line_error(res, "teacher", "retrained or replaced")
    with pytest.raises(TrilemmaError, match="retrained or replaced"):
        denoiser_from_checkpoint(load_checkpoint(student))
    after = _files(tmp_path)
    assert after == {**before, tmp_path / "s4.yaml": after[tmp_path / "s4.yaml"]}, "the refused commands wrote nothing"


@pytest.mark.parametrize("change, fragment", [
    ({"model": {"hidden": 64}}, "model: a distill student takes its teacher's model"),
    ({"distill": {"teacher": ""}}, "distill.teacher: name the run"),
    ({"distill": {"method": "dmd"}}, "distill.method must be one of progressive, consistency, adversarial"),
    ({"distill": {"method": "adversarial", "student_steps": 16}}, "an adversarial student takes T <= 8"),
    ({"data": {"name": "toy2d", "toy": "ring8"}}, "a student learns on its teacher's data"),
    ({"distill": {"rounds": 3}}, "distill.rounds: 3 rounds share train.steps equally; 4 steps is not a multiple"),
    ({"distill": {"method": "consistency", "student_steps": 1, "rounds": 2}}, "distill.rounds: the consistency method"),
])
def test_bad_student_configs_are_one_line_errors(teacher, tmp_path, change, fragment):
    cfg = student_config(teacher)
    for k, v in change.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    assert_one_line_error(run("train", write_config(tmp_path / "s.yaml", cfg), "--out", tmp_path / "o", "--quiet"),
                          fragment)
    assert not (tmp_path / "o").exists()


def test_a_teacher_of_another_kind_or_too_many_steps_is_refused(teacher, tmp_path):
    with pytest.raises(TrilemmaError, match="exceeds the schedule's 1000 training steps"):
        build_family(load_config(write_config(tmp_path / "s.yaml", student_config(teacher, 600))), (2,))


def test_a_student_can_predict_v_from_an_eps_teacher(tmp_path):
    """distill.prediction v: the same network and weights as the eps teacher, its output read as v, so
    x0_hat = alpha z - sigma net(z, t); a round of it trains and its later rounds keep predicting v."""
    from trilemma.schedules import alpha_sigma

    eps_teacher = tmp_path / "eps"
    train(load_config(write_config(tmp_path / "t.yaml", TOY, train={"steps": 2})), eps_teacher, progress=False)
    cfg = student_config(eps_teacher, 2)
    cfg["distill"]["prediction"] = "v"
    family = build_family(load_config(write_config(tmp_path / "s.yaml", cfg)), (2,))
    den = family.denoiser(family.modules)
    teacher_net = denoiser_from_checkpoint(load_checkpoint(eps_teacher)).net
    z, t = torch.randn(16, 2, generator=torch.Generator().manual_seed(3)), torch.full((16,), 0.5, dtype=torch.float64)
    a, s = (v.float()[:, None] for v in alpha_sigma(den.schedule, t))
    with torch.no_grad():
        want = a * z - s * teacher_net(z, den.net_time(t))
        assert den.prediction == "v" and torch.allclose(den(z, t), want, atol=1e-6)
    r1 = tmp_path / "r1"
    assert run("train", write_config(tmp_path / "s.yaml", cfg), "--out", r1, "--quiet").exit_code == 0
    r2 = build_family(load_config(write_config(tmp_path / "s2.yaml", student_config(r1, 1))), (2,))
    assert r2.denoiser(r2.modules).prediction == "v", "a later round keeps its teacher's v"

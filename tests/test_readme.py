"""The README and every `--help` example run as written, so they cannot drift from the code.

Each `trilemma ...` line of the README's bash blocks and of the commands' `Example:` sections runs in a fresh
directory holding only the clone's configs/ and benchmarks/ (what a clean clone has), in order, through the
real CLI. Long jobs are shortened by flags appended to the literal command, and only those (`FAST`): a training
runs 2 steps, a bench or demo scores a few samples, an evaluation a few images. The README's Python blocks run
as scripts in the same directory. Lines that are not trilemma commands are named in `SKIPPED` with the reason.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import run
from trilemma.config import load_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file()

# appended to a command to make it finish in seconds (the command itself is run as written)
FAST = {
    "train": ["--steps", "2", "--quiet", "--set", "train.batch_size=8", "--set", "train.save_every=0",
              "--set", "sample.n=4", "--set", "sample.steps=2", "--set", "autoencoder.scale_images=64",
              "--set", "latent.cache=false"],
    "bench": ["-n", "6", "--quiet"],
    "demo": ["-n", "50", "--quiet"],
    "eval": ["-n", "16", "--quiet"],
    "sample": ["--quiet"],
    "export": [],
}
SKIPPED = {
    "source": "activates the virtualenv the test already runs in",
    "make": "make test is this suite; make demo runs `trilemma demo`, run here with -n 50",
    "pip": "installation (the CUDA section)",
    "python -m venv": "installation (the CUDA section)",
    "accelerate": "multi-process training: tests/test_training.py::test_two_processes_equal_one_process...",
}


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _command_lines(text: str) -> list[str]:
    """Logical lines (continuations joined), comments removed."""
    text = text.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.split("  #")[0].split(" # ")[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _help_examples() -> list[str]:
    from trilemma.cli import main

    lines = []
    for name in [None, "train", "sample", "export", "eval", "bench", "demo"]:
        doc = main.help if name is None else main.commands[name].help
        lines += [ln.strip() for ln in doc.split("Example:")[1].splitlines() if ln.strip()]
    return lines


def _run_line(line: str, cwd: Path) -> None:
    if line.startswith("python -c"):
        res = subprocess.run([sys.executable, "-c", shlex.split(line)[2]], cwd=cwd, capture_output=True, text=True)
        assert res.returncode == 0, (line, res.stderr[-2000:])
        return
    if not line.startswith("trilemma "):
        reason = next((why for start, why in SKIPPED.items() if line.startswith(start)), None)
        assert reason, f"a README line the test does not know how to run or skip: {line!r}"
        return
    args = shlex.split(line)[1:]
    ref = args[1] if args[0] in ("sample", "eval", "export") and args[1].startswith("runs/") else None
    if ref and not (cwd / ref).exists():
        # an example that reads a run the text trains elsewhere (e.g. `eval runs/fmnist-vdm`): train its preset
        name = Path(ref).parts[1]
        assert (cwd / "configs" / f"{name}.yaml").is_file(), f"{line}: no run {ref} and no preset for it"
        _run_line(f"trilemma train configs/{name}.yaml --out runs/{name}", cwd)
    res = run(*args, *_fast(args, cwd))
    assert res.exit_code == 0, (line, res.output[-3000:])


def _fast(args: list[str], cwd: Path) -> list[str]:
    """FAST's flags for a command; a distill student's config takes no autoencoder or latent section (its
    teacher's are its own), so those overrides are left off for it."""
    flags = FAST[args[0]]
    if args[0] != "train" or load_config(cwd / args[1]).family != "distill":
        return flags
    out, i = [], 0
    while i < len(flags):
        if flags[i] == "--set" and flags[i + 1].split(".")[0] in ("autoencoder", "latent"):
            i += 2
            continue
        out.append(flags[i])
        i += 1
    return out


@pytest.fixture
def clone(tmp_path, monkeypatch):
    """What a clean clone has for the README's commands: configs/ and benchmarks/ (data sets are offline)."""
    for d in ("configs", "benchmarks"):
        shutil.copytree(ROOT / d, tmp_path / d)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow
def test_readme_commands_and_code_run(clone):
    blocks = _blocks("bash")
    assert blocks, "the README has bash blocks"
    for block in blocks:
        lines = _command_lines(block)
        if not FMNIST and any("fmnist" in ln for ln in lines):
            continue  # the latent walkthrough needs Debian's dataset-fashion-mnist (.ci/run installs it)
        for line in lines:
            _run_line(line, clone)
    assert (clone / "runs/digits-ddim50.png").is_file() and (clone / "runs/digits-ddim50.npz").is_file()
    assert (clone / "exported/digits/model_index.json").is_file()
    for code in _blocks("python"):  # the API section, on the digits run trained above
        res = subprocess.run([sys.executable, "-c", code], cwd=clone, capture_output=True, text=True,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert res.returncode == 0, (code, res.stderr[-3000:])
        assert "10" in res.stdout and "torch.Size([16, 1, 8, 8])" in res.stdout, res.stdout


@pytest.mark.slow
def test_help_examples_run(clone):
    examples = _help_examples()
    assert len(examples) >= 9
    for line in examples:
        if not FMNIST and "fmnist" in line:
            continue
        _run_line(line, clone)


def test_readme_grid_is_the_shipped_grid_file():
    """The YAML the README shows is benchmarks/grids/digits.yaml, key for key."""
    (block,) = [b for b in _blocks("yaml") if "benchmarks/grids/digits.yaml" in b]
    assert yaml.safe_load(block) == yaml.safe_load((ROOT / "benchmarks/grids/digits.yaml").read_text())


def test_readme_api_names_are_importable():
    """Everything the README lists as API is importable from `trilemma`."""
    import trilemma

    section = README.split("## Python API")[1].split("\n## ")[0]
    names = set(re.findall(r"`(sample_\w+|slerp|ddim_interpolate|generate|time_grid|initial_noise|SampleNoise|"
                           r"LinearBeta|Cosine|VPSDE|LinearGamma|LearnedGamma|PredictionDenoiser|CountNFE)`", section))
    assert len(names) >= 12, names
    missing = [n for n in names if not hasattr(trilemma, n)]
    assert not missing, missing

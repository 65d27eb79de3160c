"""Tests for trilemma.data: toy generators, digits, Fashion-MNIST IDX parsing, image folders, the loader."""

import gzip
import json
import math
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from trilemma.data import (
    TOY_SCALE,
    TOYS,
    DataConfig,
    Dataset,
    InfiniteLoader,
    convert_points,
    describe,
    load_dataset,
    same_points,
    toy_modes,
)
from trilemma.errors import TrilemmaError

FASHION = Path("/usr/share/datasets/fashion-mnist")


def _one_line_error(excinfo, name: str):
    """The error is one line and names the offending file."""
    msg = str(excinfo.value)
    assert "\n" not in msg
    assert name in msg, msg


# --- config ----------------------------------------------------------------------------------------


def test_config_rejects_unknown_names():
    with pytest.raises(TrilemmaError, match="grid25"):  # lists the valid choices
        DataConfig(toy="spiral")
    with pytest.raises(TrilemmaError, match="fashion-mnist"):
        DataConfig(name="cifar10")
    with pytest.raises(TrilemmaError):
        DataConfig(name="folder")  # needs a root
    with pytest.raises(TrilemmaError):
        load_dataset(DataConfig(), split="val")


@pytest.mark.parametrize("kwargs, key", [
    ({"n": 0}, "data.n"), ({"n": 10**12}, "data.n"), ({"seed": -1}, "data.seed"),
    ({"image_size": 0}, "data.image_size"), ({"image_size": 100_000}, "data.image_size"),
    ({"channels": 2}, "data.channels"),
])
def test_config_rejects_out_of_range_values(kwargs, key):
    from trilemma.config import from_dict

    with pytest.raises(TrilemmaError, match=key) as e:
        DataConfig(**kwargs)
    assert "\n" not in str(e.value)
    with pytest.raises(TrilemmaError) as e:  # from a config file: the file, then the key
        from_dict(DataConfig, kwargs, "run.yaml", "data.")
    assert str(e.value).startswith(f"run.yaml: {key} must") and "\n" not in str(e.value), str(e.value)


# --- toys ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("toy", TOYS)
def test_toy_determinism_and_seeds(toy):
    a = load_dataset(DataConfig(toy=toy, n=2000, seed=3))
    b = load_dataset(DataConfig(toy=toy, n=2000, seed=3))
    c = load_dataset(DataConfig(toy=toy, n=2000, seed=4))
    test = load_dataset(DataConfig(toy=toy, n=2000, seed=3), split="test")
    assert a.x.dtype == torch.float32 and a.x.shape == (2000, 2) and a.kind == "points" and a.shape == (2,)
    assert torch.equal(a.x, b.x)
    assert not torch.allclose(a.x, c.x)
    assert test.x.shape == (200, 2)
    assert not torch.allclose(a.x[:200], test.x)  # the test split is a different stream
    # roughly unit scale: the average per-axis variance is ~1 for every toy
    assert 0.8 < a.x.var(0).mean().item() < 1.2
    assert a.x.mean(0).abs().max().item() < 0.15  # centred


def test_grid25_scaled_variance_and_modes():
    x = load_dataset(DataConfig(toy="grid25", n=10_000, seed=0)).x
    assert TOY_SCALE["grid25"] == pytest.approx(1 / math.sqrt(8))
    assert torch.all((x.var(0) - 1).abs() < 0.1)
    means, std = toy_modes("grid25")
    assert means.shape == (25, 2) and std == pytest.approx(0.05 / math.sqrt(8))
    dist = torch.cdist(x, means).min(1).values / std
    # For a 2-D Gaussian P(r > 4 std) = exp(-8) ~ 3e-4 and P(r > 6 std) = exp(-18) ~ 2e-8.
    assert (dist <= 4).float().mean().item() > 0.999
    assert dist.max().item() < 6
    # every mode is populated, roughly equally (400 expected each)
    counts = torch.bincount(torch.cdist(x, means).argmin(1), minlength=25)
    assert counts.min().item() > 300 and counts.max().item() < 500


def test_toys_in_their_own_coordinates():
    """unit_variance: false gives the same draws before scaling: grid25 means at -4..4 step 2, std 0.05."""
    raw_cfg, unit_cfg = DataConfig(toy="grid25", n=5000, unit_variance=False), DataConfig(toy="grid25", n=5000)
    raw, unit = load_dataset(raw_cfg).x, load_dataset(unit_cfg).x
    means, std = toy_modes("grid25", unit_variance=False)
    assert std == 0.05 and sorted(means[:, 0].unique().tolist()) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert torch.cdist(raw, means).min(1).values.max().item() < 6 * std
    assert torch.allclose(raw * TOY_SCALE["grid25"], unit, atol=1e-6)
    # a model trained on either is scored in the other's coordinates by one factor, both ways
    assert torch.allclose(convert_points(raw, raw_cfg, unit_cfg), unit, atol=1e-6)
    assert torch.allclose(convert_points(unit, unit_cfg, raw_cfg), raw, atol=1e-5)
    assert convert_points(unit, unit_cfg, unit_cfg) is unit
    assert same_points(raw_cfg, unit_cfg) and not same_points(raw_cfg, DataConfig(toy="ring8", n=5000))
    assert not same_points(raw_cfg, DataConfig(toy="grid25", n=5000, seed=1, unit_variance=False))


def test_ring8_modes_on_circle():
    means, std = toy_modes("ring8")
    assert means.shape == (8, 2)
    r = means.norm(dim=1)
    assert torch.allclose(r, torch.full((8,), 2 * TOY_SCALE["ring8"]), atol=1e-6)
    angles = torch.atan2(means[:, 1], means[:, 0]).remainder(2 * math.pi)
    assert torch.allclose(angles.sort().values, torch.arange(8) * math.pi / 4, atol=1e-6)
    x = load_dataset(DataConfig(toy="ring8", n=4000)).x
    assert torch.cdist(x, means).min(1).values.max().item() < 6 * std
    with pytest.raises(TrilemmaError, match="no discrete modes"):
        toy_modes("moons")


def test_checkerboard_on_black_squares():
    x = load_dataset(DataConfig(toy="checkerboard", n=4000)).x / TOY_SCALE["checkerboard"]
    assert x.abs().max().item() <= 2
    cell = torch.floor(x + 2).long()
    assert torch.all((cell[:, 0] + cell[:, 1]) % 2 == 0)


# --- digits ----------------------------------------------------------------------------------------


def test_digits_split():
    from sklearn.datasets import load_digits

    tr = load_dataset(DataConfig(name="digits"), "train")
    te = load_dataset(DataConfig(name="digits"), "test")
    assert tr.x.shape == (1500, 1, 8, 8) and te.x.shape == (297, 1, 8, 8)
    assert tr.x.dtype == torch.float32 and tr.y.dtype == torch.int64
    for d in (tr, te):
        assert d.x.min().item() == -1.0 and d.x.max().item() == 1.0
    # the two splits partition the 1797 (all distinct) images: disjoint and together complete
    full = torch.from_numpy(load_digits().images.reshape(1797, 64)).float() / 8 - 1
    both = torch.cat([tr.x, te.x]).reshape(1797, 64)
    assert torch.unique(torch.cat([full, both]), dim=0).shape[0] == 1797
    assert torch.unique(both, dim=0).shape[0] == 1797
    assert set(tr.y.tolist()) == set(range(10))
    assert torch.equal(tr.x, load_dataset(DataConfig(name="digits", seed=7)).x)  # split ignores the toy seed
    assert "1500" in describe(tr)


# --- Fashion-MNIST ---------------------------------------------------------------------------------


@pytest.fixture
def fashion():
    if not FASHION.is_dir():
        pytest.skip(f"{FASHION} is absent")
    return FASHION


def test_fashion_mnist_real(fashion):
    tr = load_dataset(DataConfig(name="fashion-mnist", root=str(fashion)), "train")
    te = load_dataset(DataConfig(name="fashion-mnist", root=str(fashion)), "test")
    assert tr.x.shape == (60000, 1, 28, 28) and te.x.shape == (10000, 1, 28, 28)
    assert tr.x.dtype == torch.float32 and tr.y.dtype == torch.int64
    assert tr.x.min().item() == -1.0 and tr.x.max().item() == 1.0
    for d in (tr, te):
        assert d.y.min().item() == 0 and d.y.max().item() == 9
        assert torch.bincount(d.y).numel() == 10 and torch.all(torch.bincount(d.y) > 0)
    padded = load_dataset(DataConfig(name="fashion-mnist", root=str(fashion), pad32=True), "test")
    assert padded.x.shape == (10000, 1, 32, 32)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert torch.all(padded.x[:, :, border] == -1)
    assert torch.equal(padded.x[:, :, 2:30, 2:30], te.x)


def test_fashion_mnist_env_root(fashion, monkeypatch):
    monkeypatch.setenv("TRILEMMA_DATA", str(fashion))
    assert load_dataset(DataConfig(name="fashion-mnist"), "test").x.shape == (10000, 1, 28, 28)


def _idx_images(n=3, rows=28, cols=28, magic=2051) -> bytes:
    pixels = (np.arange(n * rows * cols) % 256).astype(np.uint8).tobytes()
    return struct.pack(">IIII", magic, n, rows, cols) + pixels


def _idx_labels(n=3, magic=2049) -> bytes:
    return struct.pack(">II", magic, n) + bytes(i % 10 for i in range(n))


def _write_fashion(root: Path, images: bytes, labels: bytes, gz: bool = True) -> None:
    """Write a tiny train split (test files are never read by the train loader)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, payload in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (root / name).write_bytes(payload)


def test_fashion_tiny_valid_gz_and_raw(tmp_path):
    _write_fashion(tmp_path / "gz", _idx_images(), _idx_labels())
    _write_fashion(tmp_path / "raw", _idx_images(), _idx_labels(), gz=False)
    a = load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path / "gz")))
    b = load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path / "raw")))
    assert a.x.shape == (3, 1, 28, 28) and torch.equal(a.x, b.x) and a.y.tolist() == [0, 1, 2]
    assert a.x.min().item() == -1.0 and a.x.max().item() == 1.0


def test_fashion_missing_dir_and_file(tmp_path):
    with pytest.raises(TrilemmaError) as e:
        load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path / "nowhere")))
    _one_line_error(e, "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrilemmaError) as e:
        load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path / "empty")))
    _one_line_error(e, "train-images-idx3-ubyte.gz")


def test_fashion_wrong_magic(tmp_path):
    _write_fashion(tmp_path, _idx_images(magic=2049), _idx_labels())
    with pytest.raises(TrilemmaError, match="magic") as e:
        load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path)))
    _one_line_error(e, "train-images-idx3-ubyte.gz")


def test_fashion_truncated(tmp_path):
    _write_fashion(tmp_path, _idx_images()[:-100], _idx_labels())
    with pytest.raises(TrilemmaError, match="truncated") as e:
        load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path)))
    _one_line_error(e, "train-images-idx3-ubyte.gz")


def test_fashion_not_gzip(tmp_path):
    _write_fashion(tmp_path, _idx_images(), _idx_labels())
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(_idx_labels())  # raw bytes under a .gz name
    with pytest.raises(TrilemmaError, match="not a gzip") as e:
        load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path)))
    _one_line_error(e, "train-labels-idx1-ubyte.gz")


def test_fashion_count_mismatch(tmp_path):
    _write_fashion(tmp_path, _idx_images(n=3), _idx_labels(n=4))
    with pytest.raises(TrilemmaError) as e:
        load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path)))
    _one_line_error(e, "train-labels-idx1-ubyte.gz")


def test_fashion_wrong_image_size_and_header_counts(tmp_path):
    _write_fashion(tmp_path / "a", _idx_images(rows=32, cols=32), _idx_labels())
    with pytest.raises(TrilemmaError, match="28x28") as e:
        load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path / "a")))
    _one_line_error(e, "train-images-idx3-ubyte.gz")
    # a header claiming more images than the file holds: gzip read to its end, raw refused from its size
    lying = struct.pack(">IIII", 2051, 100, 28, 28) + _idx_images()[16:]
    for gz in (True, False):
        root = tmp_path / f"lying-{gz}"
        _write_fashion(root, lying, _idx_labels(100), gz=gz)
        with pytest.raises(TrilemmaError, match="truncated") as e:
            load_dataset(DataConfig(name="fashion-mnist", root=str(root)))
        _one_line_error(e, "train-images-idx3-ubyte")
    _write_fashion(tmp_path / "b", _idx_images(), _idx_labels(3) + b"\0")  # one byte after the last label
    with pytest.raises(TrilemmaError, match="trailing") as e:
        load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path / "b")))
    _one_line_error(e, "train-labels-idx1-ubyte.gz")


def _gzip_bomb(path: Path, header: bytes, members: int = 16) -> None:
    """A gzip of `header` and then `members` x 64 MiB of zeros (16: 1 GiB in ~1 MB), written without
    holding either in memory: one member of 64 MiB of zeros (about 65 kB compressed) is repeated, and
    gzip readers decompress concatenated members as one stream."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip member
    block = bytes(1 << 20)
    zeros = b"".join(z.compress(block) for _ in range(64)) + z.flush()
    with open(path, "wb") as f:
        f.write(gzip.compress(header))
        for _ in range(members):
            f.write(zeros)


_BOMB_SCRIPT = """
import json, resource, sys, time
from trilemma.data import DataConfig, load_dataset
from trilemma.errors import TrilemmaError
out = {"base": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "cases": {}}
for root in sys.argv[1:]:
    t0 = time.perf_counter()
    try:
        load_dataset(DataConfig(name="fashion-mnist", root=root))
        msg = None
    except TrilemmaError as e:
        msg = str(e)
    out["cases"][root] = [msg, time.perf_counter() - t0]
out["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(out))
"""


def test_fashion_gzip_bomb_is_refused_from_its_header(tmp_path):
    """A 1 MB .gz that inflates to 1 GiB was decompressed whole (2.6 GB RSS) before its header was read.
    Now the header is checked first and only the declared payload is read: each case fails in well under
    a second, with a one-line error, and the loading process's peak memory grows by less than 200 MB."""
    cases = {
        "huge-count": (struct.pack(">IIII", 2051, 2**31, 28, 28), "2147483648 items"),
        # under the item cap, but 784 MB cannot fit in a 65 kB gzip: refused from the file size alone
        "over-ratio": (struct.pack(">IIII", 2051, 999_999, 28, 28), "truncated"),
        "trailing": (struct.pack(">IIII", 2051, 3, 28, 28), "trailing"),  # 3 images, then 1 GiB of zeros
    }
    roots = []
    for name, (header, _) in cases.items():
        root = tmp_path / name
        root.mkdir()
        _gzip_bomb(root / "train-images-idx3-ubyte.gz", header, members=1 if name == "over-ratio" else 16)
        (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_labels(3)))
        roots.append(str(root))
    size = (tmp_path / "huge-count" / "train-images-idx3-ubyte.gz").stat().st_size
    assert 0.5e6 < size < 2e6, size  # really a ~1 MB file for 1 GiB of payload
    proc = subprocess.run([sys.executable, "-c", _BOMB_SCRIPT, *roots], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for (name, (_, fragment)), root in zip(cases.items(), roots):
        msg, seconds = out["cases"][root]
        assert msg is not None and "\n" not in msg and fragment in msg, (name, msg)
        assert f"{name}/train-images-idx3-ubyte.gz" in msg, msg
        assert seconds < 5, f"{name}: {seconds:.1f} s to refuse"
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    grown = (out["peak"] - out["base"]) * unit
    assert grown < 200e6, f"peak RSS grew by {grown / 1e6:.0f} MB while refusing the bombs"


# --- image folder ----------------------------------------------------------------------------------


def test_folder_loader(tmp_path):
    from PIL import Image

    (tmp_path / "sub").mkdir()
    Image.new("RGB", (10, 6), (255, 255, 255)).save(tmp_path / "a.png")
    Image.new("L", (7, 7), 0).save(tmp_path / "sub" / "b.png")
    Image.new("RGBA", (5, 9), (255, 0, 0, 255)).save(tmp_path / "c.PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    rgb = load_dataset(DataConfig(name="folder", root=str(tmp_path), image_size=8, channels=3))
    assert rgb.x.shape == (3, 3, 8, 8) and rgb.y is None and rgb.kind == "images"
    assert rgb.x.min().item() == -1.0 and rgb.x.max().item() == 1.0
    # sorted paths: a.png (white), c.PNG (red, RGBA -> RGB), sub/b.png (black, L -> RGB)
    assert torch.all(rgb.x[0] == 1)
    assert torch.all(rgb.x[1, 0] == 1) and torch.all(rgb.x[1, 1:] == -1)
    assert torch.all(rgb.x[2] == -1)
    gray = load_dataset(DataConfig(name="folder", root=str(tmp_path), image_size=4, channels=1), "test")
    assert gray.x.shape == (3, 1, 4, 4)


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrilemmaError) as e:
        load_dataset(DataConfig(name="folder", root=str(tmp_path / "empty")))
    _one_line_error(e, "empty")
    with pytest.raises(TrilemmaError) as e:
        load_dataset(DataConfig(name="folder", root=str(tmp_path / "missing")))
    _one_line_error(e, "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"definitely not a png")
    with pytest.raises(TrilemmaError) as e:
        load_dataset(DataConfig(name="folder", root=str(tmp_path / "bad")))
    _one_line_error(e, "broken.png")


def test_folder_too_large_for_memory_is_one_line(tmp_path, monkeypatch):
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")

    def no_memory(*a, **k):
        raise MemoryError

    monkeypatch.setattr(np, "empty", no_memory)
    with pytest.raises(TrilemmaError, match="image_size") as e:
        load_dataset(DataConfig(name="folder", root=str(tmp_path), image_size=4096))
    _one_line_error(e, str(tmp_path))


# --- InfiniteLoader --------------------------------------------------------------------------------


def _indexed(n: int) -> Dataset:
    """Points whose first coordinate is their row index, so batches reveal which rows were drawn."""
    x = torch.stack([torch.arange(n, dtype=torch.float32), torch.zeros(n)], dim=1)
    return Dataset(x=x, y=None, kind="points", name="indexed")


def test_loader_ranks_match_single_process():
    data = _indexed(11)  # global batch 4 -> 2 batches per epoch, 3 rows dropped each epoch
    single = InfiniteLoader(data, batch_size=4, seed=5)
    ranks = [InfiniteLoader(data, batch_size=2, seed=5, rank=r, world_size=2) for r in range(2)]
    seen_by_epoch = []
    for step in range(7):  # crosses three epoch boundaries
        big = next(single)
        parts = [next(r) for r in ranks]
        assert big.shape == (4, 2) and parts[0].shape == (2, 2)
        assert torch.equal(torch.cat(parts), big)
        if step % 2 == 0:
            seen_by_epoch.append([])
        seen_by_epoch[-1] += big[:, 0].long().tolist()
    for rows in seen_by_epoch:
        assert len(set(rows)) == len(rows)  # no repeats within an epoch
    assert seen_by_epoch[0] != seen_by_epoch[1]  # epochs are reshuffled
    assert single.state_dict()["epoch"] == 3


def test_loader_resume_exact():
    data = _indexed(10)
    a = InfiniteLoader(data, batch_size=3, seed=1, rank=1, world_size=2)
    for _ in range(4):  # mid second epoch
        next(a)
    state = a.state_dict()
    assert all(type(v) is int for v in state.values())
    expected = [next(a) for _ in range(5)]
    b = InfiniteLoader(data, batch_size=3, seed=1, rank=1, world_size=2)
    b.load_state_dict(dict(state))
    assert all(torch.equal(u, v) for u, v in zip(expected, (next(b) for _ in range(5))))
    other_seed = InfiniteLoader(data, batch_size=3, seed=2, rank=1, world_size=2)
    other_seed.load_state_dict(state)
    assert not all(torch.equal(u, next(other_seed)) for u in expected)


def test_loader_rejects_too_small_dataset():
    with pytest.raises(TrilemmaError):
        InfiniteLoader(_indexed(5), batch_size=3, seed=0, world_size=2)

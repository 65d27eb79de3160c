"""Datasets for trilemma: seeded 2-D toys, sklearn digits, Fashion-MNIST (IDX files, read by `trilemma.idx`) and
image folders.

Every loader returns a `Dataset` whose `x` is float32 in the model's coordinates: images (N, C, H, W)
in [-1, 1], toy points (N, 2) scaled to roughly unit variance per axis (or, with `unit_variance: false`, in
the toy's own coordinates). Bad user input (unknown names, missing or corrupt files) raises a one-line
`TrilemmaError` that names the offending file or key.
`InfiniteLoader` draws seeded, exactly resumable minibatches that are split consistently across ranks.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .errors import TrilemmaError
# the IDX reader lives in its own module; its limits stay importable from here, where they were defined before
from .idx import GZIP_MAX_RATIO, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, IDX_MAX_ITEMS, read_idx  # noqa: F401
from .paths import error_line

DATASETS = ("toy2d", "digits", "fashion-mnist", "folder")
TOYS = ("grid25", "ring8", "swissroll", "moons", "checkerboard")
SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
FASHION_MNIST_DEFAULT = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist

# Raw (unscaled) toy parameters.
SWISSROLL_NOISE = 0.5  # Gaussian noise std; arms are 2*pi apart, so 0.5 keeps them clearly separated
MOONS_NOISE = 0.05  # as in the usual sklearn make_moons(noise=0.05) demos
# Swiss roll is centred on its exact mean before scaling: t ~ U[1.5pi, 4.5pi] gives
# E[t cos t] = [t sin t + cos t] / 3pi = 6pi / 3pi = 2 and E[t sin t] = [sin t - t cos t] / 3pi = 2 / 3pi.
SWISSROLL_MEAN = (2.0, 2.0 / (3.0 * math.pi))
# Moons are centred likewise: the two half circles have means (0, 2/pi) and (1, 1/2 - 2/pi), so (1/2, 1/4).
MOONS_MEAN = (0.5, 0.25)

# One isotropic factor per toy (shapes are preserved) so that the average per-axis variance is ~1:
#   grid25: means {-4..4 step 2} have per-axis variance (16+4+0+4+16)/5 = 8 (+0.05^2, negligible).
#   ring8: radius 2 at uniform angles -> per-axis variance 4 * E[cos^2] = 2 (+0.02^2).
#   swissroll: total variance E[t^2] - |mean|^2 + 2 noise^2, with E[t^2] = (4.5^3 - 1.5^3) pi^2 / 9 = 9.75 pi^2,
#     i.e. ~92.7, ~46.3 per axis (44.1 on x, 48.6 on y) -> factor ~0.147.
#   moons: per-axis variances 3/4 and 5/8 - 1/pi - 1/16 (+noise^2 each), mean ~0.5 -> factor ~1.415
#     (x ends up with variance ~1.5 and y ~0.5: the moons are wider than tall).
#   checkerboard: x (and y) is uniform on [-2, 2] overall (every column holds two black squares) -> 16/12 = 4/3.
TOY_SCALE: dict[str, float] = {
    "grid25": 1.0 / math.sqrt(8.0),
    "ring8": 1.0 / math.sqrt(2.0),
    "swissroll": 1.0
    / math.sqrt((9.75 * math.pi**2 - SWISSROLL_MEAN[0] ** 2 - SWISSROLL_MEAN[1] ** 2 + 2 * SWISSROLL_NOISE**2) / 2),
    "moons": 1.0 / math.sqrt((0.75 + (0.625 - 1 / math.pi - 0.0625) + 2 * MOONS_NOISE**2) / 2),
    "checkerboard": math.sqrt(3.0) / 2.0,
}
_TOY_STD = {"grid25": 0.05, "ring8": 0.02}  # per-mode std before scaling

# Upper bounds that turn a typo (n: 1000000000000) into a one-line error instead of a failed allocation.
MAX_POINTS = 100_000_000  # toy2d data.n: 800 MB of float32 points
MAX_IMAGE_SIZE = 4096  # folder data.image_size

DIGITS_TRAIN, DIGITS_TEST = 1500, 297  # sklearn's 1797 digits, split by a fixed permutation

FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_IMAGE_SHAPE = (28, 28)


@dataclass
class DataConfig:
    name: str = "toy2d"  # toy2d | digits | fashion-mnist | folder
    toy: str = "grid25"  # toy2d only: grid25 | ring8 | swissroll | moons | checkerboard
    n: int = 100_000  # toy2d: train points; the test split has n // 10 fresh points from another seed stream
    seed: int = 0  # toy2d: generator seed (digits use a fixed split, images have no randomness)
    root: str | None = None  # data directory: fashion-mnist (default $TRILEMMA_DATA, then the Debian path), folder
    pad32: bool = False  # fashion-mnist: zero-pad 28x28 -> 32x32 (pad value -1 after scaling)
    image_size: int = 32  # folder: square output size in pixels
    channels: int = 3  # folder: 1 (grayscale) or 3 (RGB)
    unit_variance: bool = True  # toy2d: scale to ~unit variance per axis; false keeps the toy's own coordinates
    # (grid25: means at -4..4 step 2, std 0.05, as in the VEEGAN / PacGAN / DDGAN toy benchmarks)

    def __post_init__(self):
        """Reject unknown names and out-of-range values (the filesystem is checked only when loading)."""
        if self.name not in DATASETS:
            raise TrilemmaError(f"data.name: unknown dataset {self.name!r}; choose one of {', '.join(DATASETS)}")
        if self.toy not in TOYS:
            raise TrilemmaError(f"data.toy: unknown toy {self.toy!r}; choose one of {', '.join(TOYS)}")
        if not 1 <= self.n <= MAX_POINTS:
            raise TrilemmaError(f"data.n must be in [1, {MAX_POINTS:,}] (toy points are drawn in memory), got {self.n}")
        if not 0 <= self.seed < 2**62:
            raise TrilemmaError(f"data.seed must be in [0, 2^62), got {self.seed}")
        if not 1 <= self.image_size <= MAX_IMAGE_SIZE:
            raise TrilemmaError(f"data.image_size must be in [1, {MAX_IMAGE_SIZE}], got {self.image_size}")
        if self.channels not in (1, 3):
            raise TrilemmaError(f"data.channels must be 1 or 3, got {self.channels}")
        if self.name == "folder" and not self.root:
            raise TrilemmaError("data.root: the folder dataset needs a directory of images")


@dataclass
class Dataset:
    x: torch.Tensor  # float32: images (N, C, H, W) in [-1, 1], or points (N, 2)
    y: torch.Tensor | None  # int64 class labels, or None
    kind: str  # "points" | "images"
    name: str  # e.g. "toy2d/grid25", "digits", "fashion-mnist", "folder"

    @property
    def shape(self) -> tuple[int, ...]:
        """Per-sample shape, e.g. (2,) or (1, 28, 28)."""
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return self.x.shape[0]


def describe(data: Dataset) -> str:
    """One-line summary: name, size, per-sample shape, value range (and class count if labelled)."""
    lo, hi = (data.x.min().item(), data.x.max().item()) if len(data) else (float("nan"), float("nan"))
    classes = f", {int(data.y.unique().numel())} classes" if data.y is not None and len(data) else ""
    return f"{data.name}: {len(data)} {data.kind} of shape {data.shape}, range [{lo:.3g}, {hi:.3g}]{classes}"


def data_levels(cfg: DataConfig) -> int | None:
    """How many evenly spaced values a data coordinate takes on [-1, 1] (for a discretised likelihood):
    256 for 8-bit images, 17 for scikit-learn's digits (0..16); None for continuous data (toy2d)."""
    return {"digits": 17, "fashion-mnist": 256, "folder": 256}.get(cfg.name)


def load_dataset(cfg: DataConfig, split: str = "train") -> Dataset:
    """Load the `split` ("train" | "test") of the dataset described by `cfg`."""
    if split not in SPLITS:
        raise TrilemmaError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if cfg.name == "toy2d":
        return _load_toy(cfg, split)
    if cfg.name == "digits":
        return _load_digits(split)
    if cfg.name == "fashion-mnist":
        return _load_fashion_mnist(cfg, split)
    return _load_folder(cfg)


# --- toy 2-D distributions ---------------------------------------------------------------------------


def _raw_modes(toy: str) -> torch.Tensor:
    """Unscaled mode means (K, 2) of the mixture toys."""
    if toy == "grid25":
        v = torch.arange(-4.0, 5.0, 2.0)
        gx, gy = torch.meshgrid(v, v, indexing="ij")
        return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    if toy == "ring8":
        a = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
        return (2.0 * torch.stack([a.cos(), a.sin()], dim=1)).float()
    raise TrilemmaError(f"toy {toy!r} has no discrete modes (only {', '.join(_TOY_STD)} do)")


def toy_factor(toy: str, unit_variance: bool = True) -> float:
    """The factor from the toy's own coordinates to the data's: TOY_SCALE[toy], or 1 without `unit_variance`."""
    if toy not in TOYS:
        raise TrilemmaError(f"unknown toy {toy!r}; choose one of {', '.join(TOYS)}")
    return TOY_SCALE[toy] if unit_variance else 1.0


def toy_modes(toy: str, unit_variance: bool = True) -> tuple[torch.Tensor, float]:
    """Mode means (K, 2) and per-mode std of grid25 / ring8, in the data's coordinates (`toy_factor`)."""
    c = toy_factor(toy, unit_variance)
    return _raw_modes(toy) * c, _TOY_STD[toy] * c


def same_points(a: DataConfig, b: DataConfig) -> bool:
    """Whether two data configs describe the same points up to the toy's scale (`unit_variance`)."""
    return replace(a, unit_variance=True) == replace(b, unit_variance=True)


def convert_points(x: torch.Tensor, src: DataConfig, dst: DataConfig) -> torch.Tensor:
    """Samples x of a model trained on `src` in the coordinates of `dst` (`same_points` data): toy points
    are rescaled between unit variance and the toy's own coordinates; anything else is returned as is."""
    if src.name != "toy2d" or src.unit_variance == dst.unit_variance:
        return x
    return x * (toy_factor(dst.toy, dst.unit_variance) / toy_factor(src.toy, src.unit_variance))


def sample_toy(toy: str, n: int, generator: torch.Generator, unit_variance: bool = True) -> torch.Tensor:
    """Draw `n` points (n, 2) float32 from toy distribution `toy`, in the coordinates `toy_factor` gives."""
    g = generator
    if toy in ("grid25", "ring8"):
        means = _raw_modes(toy)
        k = torch.randint(len(means), (n,), generator=g)
        pts = means[k] + _TOY_STD[toy] * torch.randn(n, 2, generator=g)
    elif toy == "swissroll":
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g))
        pts = torch.stack([t * t.cos(), t * t.sin()], dim=1)
        pts = pts - torch.tensor(SWISSROLL_MEAN) + SWISSROLL_NOISE * torch.randn(n, 2, generator=g)
    elif toy == "moons":
        # sklearn make_moons, with random instead of evenly spaced angles: upper moon (cos, sin),
        # lower moon (1 - cos, 1/2 - sin); exactly n // 2 points on the upper one, in random order.
        theta = math.pi * torch.rand(n, generator=g)
        upper = torch.randperm(n, generator=g) < n // 2
        c, s = theta.cos(), theta.sin()
        pts = torch.where(upper[:, None], torch.stack([c, s], 1), torch.stack([1 - c, 0.5 - s], 1))
        pts = pts - torch.tensor(MOONS_MEAN) + MOONS_NOISE * torch.randn(n, 2, generator=g)
    elif toy == "checkerboard":
        # Cells (i, j) of the 4x4 board with i + j even are "black": 8 cells of side 1 over [-2, 2]^2.
        cells = torch.tensor([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=torch.float32)
        k = torch.randint(len(cells), (n,), generator=g)
        pts = cells[k] - 2.0 + torch.rand(n, 2, generator=g)
    else:
        raise TrilemmaError(f"unknown toy {toy!r}; choose one of {', '.join(TOYS)}")
    return (pts * toy_factor(toy, unit_variance)).to(torch.float32)


def _load_toy(cfg: DataConfig, split: str) -> Dataset:
    """Seeded toy points; train and test use disjoint seed streams (2*seed and 2*seed + 1)."""
    n = cfg.n if split == "train" else max(1, cfg.n // 10)
    g = torch.Generator().manual_seed(2 * cfg.seed + (split == "test"))
    return Dataset(x=sample_toy(cfg.toy, n, g, cfg.unit_variance), y=None, kind="points", name=f"toy2d/{cfg.toy}")


# --- sklearn digits ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's bundled digits (images (1797, 8, 8), targets), parsed once per process."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


def _load_digits(split: str) -> Dataset:
    """sklearn's bundled 8x8 digits; fixed split from a legacy-numpy permutation (stable across versions)."""
    images, target = _digits_arrays()
    perm = np.random.RandomState(0).permutation(len(target))
    idx = perm[:DIGITS_TRAIN] if split == "train" else perm[DIGITS_TRAIN : DIGITS_TRAIN + DIGITS_TEST]
    x = torch.from_numpy(images[idx].astype(np.float32))[:, None] / 8.0 - 1.0  # 0..16 -> [-1, 1]
    y = torch.from_numpy(target[idx].astype(np.int64))
    return Dataset(x=x.contiguous(), y=y, kind="images", name="digits")


# --- Fashion-MNIST (IDX) -----------------------------------------------------------------------------


def _fashion_root(cfg: DataConfig) -> Path:
    """cfg.root, else $TRILEMMA_DATA, else the Debian path; a `fashion-mnist` subdirectory is preferred."""
    root = Path(cfg.root or os.environ.get("TRILEMMA_DATA") or FASHION_MNIST_DEFAULT).expanduser()
    if not root.is_dir():
        raise TrilemmaError(f"{root}: Fashion-MNIST directory not found (set data.root or $TRILEMMA_DATA)")
    sub = root / "fashion-mnist"
    return sub if sub.is_dir() else root


def _find_idx(root: Path, name: str) -> Path:
    """The gzipped file `name`, else its un-gzipped twin."""
    for p in (root / name, root / name.removesuffix(".gz")):
        if p.is_file():
            return p
    raise TrilemmaError(f"{root / name}: Fashion-MNIST file not found (nor {name.removesuffix('.gz')})")


def _load_fashion_mnist(cfg: DataConfig, split: str) -> Dataset:
    """Fashion-MNIST from the four standard IDX files; pixels 0..255 -> [-1, 1]."""
    root = _fashion_root(cfg)
    img_name, lab_name = FASHION_FILES[split]
    img_path, lab_path = _find_idx(root, img_name), _find_idx(root, lab_name)
    images = read_idx(img_path, IDX_IMAGES_MAGIC, FASHION_IMAGE_SHAPE)
    labels = read_idx(lab_path, IDX_LABELS_MAGIC, ())
    if len(images) != len(labels):
        raise TrilemmaError(f"{img_path}: {len(images)} images but {lab_path} has {len(labels)} labels")
    if len(labels) and labels.max() > 9:
        raise TrilemmaError(f"{lab_path}: label {int(labels.max())} is outside 0..9")
    # .to() makes a fresh float tensor, so the in-place ops never touch the cached uint8 array
    xt = torch.from_numpy(images).to(torch.float32).div_(127.5).sub_(1.0)[:, None]
    if cfg.pad32:
        xt = torch.nn.functional.pad(xt, (2, 2, 2, 2), value=-1.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return Dataset(x=xt.contiguous(), y=y, kind="images", name="fashion-mnist")


# --- image folder --------------------------------------------------------------------------------


def _load_folder(cfg: DataConfig) -> Dataset:
    """All images under cfg.root (recursive, sorted), center-cropped and resized; unlabelled.

    There is no held-out split for a plain folder: "train" and "test" return the same images.
    """
    from PIL import Image

    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise TrilemmaError(f"{root}: image folder not found")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise TrilemmaError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    mode, size = ("L" if cfg.channels == 1 else "RGB"), cfg.image_size
    try:
        out = np.empty((len(files), size, size, cfg.channels), dtype=np.uint8)
    except MemoryError:
        gb = len(files) * size * size * cfg.channels / 1e9
        raise TrilemmaError(f"{root}: {len(files)} images of {size}x{size}x{cfg.channels} need {gb:.1f} GB of memory; "
                            "lower data.image_size or use fewer images") from None
    for i, p in enumerate(files):
        try:
            with Image.open(p) as im:
                im = im.convert(mode)
                w, h = im.size
                s = min(w, h)
                left, top = (w - s) // 2, (h - s) // 2
                im = im.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.BICUBIC)
                out[i] = np.asarray(im).reshape(size, size, cfg.channels)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise TrilemmaError(f"{p}: unreadable image ({error_line(e)})") from None
    x = torch.from_numpy(out).permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0
    return Dataset(x=x.contiguous(), y=None, kind="images", name="folder")


# --- minibatches ---------------------------------------------------------------------------------


class InfiniteLoader:
    """Endless seeded minibatches of `data.x`, sharded across ranks and exactly resumable.

    Epoch e is the permutation drawn from a generator seeded by (seed, e). It is consumed in global
    batches of batch_size * world_size consecutive indices (an incomplete last one is dropped); rank r
    takes rows [r * batch_size, (r + 1) * batch_size) of each, so world_size ranks together see exactly
    what a single process with batch batch_size * world_size sees, in the same order.
    """

    def __init__(self, data: Dataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise TrilemmaError(f"bad loader setup: batch_size={batch_size}, rank={rank}, world_size={world_size}")
        if len(data) < batch_size * world_size:
            raise TrilemmaError(
                f"dataset {data.name} has {len(data)} samples, fewer than one global batch "
                f"({batch_size} x {world_size} processes)"
            )
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0  # current epoch
        self.position = 0  # index into this epoch's permutation where the next global batch starts
        self._perm: torch.Tensor | None = None
        self._perm_epoch = -1

    def _permutation(self) -> torch.Tensor:
        """This epoch's permutation; (seed, epoch) is hashed so nearby seeds/epochs give unrelated orders."""
        if self._perm_epoch != self.epoch:
            s = int(np.random.SeedSequence([self.seed & (2**63 - 1), self.epoch]).generate_state(1, np.uint64)[0])
            g = torch.Generator().manual_seed(s)
            self._perm, self._perm_epoch = torch.randperm(len(self.data), generator=g), self.epoch
        return self._perm

    def __iter__(self) -> InfiniteLoader:
        return self

    def __next__(self) -> torch.Tensor:
        """The next (batch_size, ...) slice of x for this rank."""
        global_batch = self.batch_size * self.world_size
        if self.position + global_batch > len(self.data):  # drop the incomplete tail, start a new epoch
            self.epoch, self.position = self.epoch + 1, 0
        start = self.position + self.rank * self.batch_size
        idx = self._permutation()[start : start + self.batch_size]
        self.position += global_batch
        return self.data.x[idx]

    def state_dict(self) -> dict:
        """Plain-int position in the stream; restoring it replays the exact same next batches."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, d: dict) -> None:
        """Resume from `state_dict()` output."""
        try:
            epoch, position = int(d["epoch"]), int(d["position"])
        except (KeyError, TypeError, ValueError):
            raise TrilemmaError(f"loader state must have integer 'epoch' and 'position', got {d!r}") from None
        if epoch < 0 or position < 0:
            raise TrilemmaError(f"loader state must be non-negative, got {d!r}")
        self.epoch, self.position = epoch, position

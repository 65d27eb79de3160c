"""Feature networks for the benchmark's Frechet distance, precision/recall and class histograms.

Inception-v3 features of 299x299 RGB resizes say little about 8x8 digits or 28x28 Fashion-MNIST, so
each image dataset gets a small classifier trained once on its own train split (`train_feature_net`,
run by `scripts/train_feature_net.py`) and shipped in `trilemma/assets/` as safetensors. Its
penultimate activations are the features; its logits give the class histogram. The SHA-256 of every
shipped file is pinned below and checked on load. Metrics computed on these features are named after
the network ("FD-digits", "FD-FMNIST"), never "FID": they are not comparable with Inception FID.

Standard Inception FID runs through the same code path (`InceptionFeatures`) with torch-fidelity's
TF-compatible Inception-v3 (`pip install trilemma[inception]`); a local copy of its weights
(`inception_weights`) must be safetensors, never a pickle.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import TrilemmaError
from .paths import atomic_write, error_line, read_safetensors, sha256_file

__all__ = [
    "FeatureNet",
    "FeatureNetConfig",
    "FeatureTrainConfig",
    "FeatureNetSpec",
    "FEATURE_NETS",
    "ClassifierFeatures",
    "InceptionFeatures",
    "load_feature_net",
    "feature_net_for",
    "extract_features",
    "train_feature_net",
    "file_sha256",
    "asset_path",
    "inception_state_dict",
]


@dataclass(frozen=True)
class FeatureNetSpec:
    """A shipped feature classifier: where it is, what it must hash to, how it was made."""

    dataset: str  # trilemma.data dataset name it was trained on
    metric: str  # name of the Frechet distance on its features, e.g. "FD-digits"
    file: str  # file name in trilemma/assets
    sha256: str  # of that file; checked on every load
    test_accuracy: float  # on the dataset's test split, as printed by the training command
    command: str  # the command that trained it


# Filled from the output of the commands below (see BENCHMARKS.md for the training log).
FEATURE_NETS: dict[str, FeatureNetSpec] = {
    "digits": FeatureNetSpec(
        dataset="digits",
        metric="FD-digits",
        file="featnet-digits.safetensors",
        sha256="6eb3ae3721e411e00d8a192a2c53d8ecdfca1f58f0eea79b8d6329490e497e7b",
        test_accuracy=0.9966,  # 296 of the 297 test digits; 15 s on 2 CPU cores
        command="python scripts/train_feature_net.py digits",
    ),
    "fashion-mnist": FeatureNetSpec(
        dataset="fashion-mnist",
        metric="FD-FMNIST",
        file="featnet-fashion-mnist.safetensors",
        sha256="c8538a22755cca6bf7b6bc2edb06e3b8b3eca29e127565f282704be9860e0fbd",
        test_accuracy=0.9229,  # of the 10,000 test images; 7 min 43 s on 2 CPU cores
        command="python scripts/train_feature_net.py fashion-mnist",
    ),
}


# --- the classifier ------------------------------------------------------------------------------


@dataclass
class FeatureNetConfig:
    in_channels: int = 1  # grayscale
    image_size: int = 28  # square input side the net was trained at
    width: int = 32  # channels of the first stage; stages use width, 2 width, 4 width
    feature_dim: int = 128  # penultimate layer = the feature vector
    num_classes: int = 10
    dropout: float = 0.3  # before the last layer, training only


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 conv + BatchNorm + ReLU layers at one resolution."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class FeatureNet(nn.Module):
    """A small VGG-style classifier: three conv stages (2x max-pool between), global average pool,
    a `feature_dim` ReLU layer (the features) and a linear classifier."""

    def __init__(self, cfg: FeatureNetConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.stages = nn.ModuleList([_stage(cfg.in_channels, w), _stage(w, 2 * w), _stage(2 * w, 4 * w)])
        self.embed = nn.Sequential(nn.Linear(4 * w, cfg.feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.feature_dim, cfg.num_classes))

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, C, H, W) in [-1, 1] -> the three stages' activations, (N, w, H, W), (N, 2w, H/2, W/2), (N, 4w, H/4, W/4)."""
        out = []
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = F.max_pool2d(x, 2)  # 28 -> 14 -> 7, 8 -> 4 -> 2
            x = stage(x)
            out.append(x)
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [-1, 1] -> (N, feature_dim)."""
        return self.embed(self.stage_outputs(x)[-1].mean((2, 3)))  # global average pool: (N, 4w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# --- feature extractors: (N, C, H, W) in [-1, 1] -> (features, logits) --------------------------------


class ClassifierFeatures:
    """A shipped FeatureNet as a feature extractor; `metric` names the Frechet distance on it."""

    def __init__(self, net: FeatureNet, metric: str, name: str):
        self.net, self.metric, self.name = net.eval(), metric, name

    def to(self, device) -> ClassifierFeatures:
        self.net.to(device)
        return self

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.net.cfg.image_size
        if x.shape[-1] != s:
            if x.shape[-1] == s + 4:  # Fashion-MNIST with data.pad32: drop the 2-pixel border again
                x = x[..., 2:-2, 2:-2]
            else:
                raise TrilemmaError(f"feature net {self.name!r} takes {s}x{s} images, got {tuple(x.shape[-2:])}")
        if x.shape[1] != self.net.cfg.in_channels:
            raise TrilemmaError(f"feature net {self.name!r} takes {self.net.cfg.in_channels}-channel images, got {x.shape[1]}")
        f = self.net.features(x.clamp(-1, 1))
        return f, self.net.head(f)


class InceptionFeatures:
    """Inception-v3 pool features (2048-d) and logits through torch-fidelity's TF-compatible port,
    i.e. standard FID (Heusel et al. 2017). `factory(weights_path)` builds the extractor; the default
    imports torch-fidelity (`pip install trilemma[inception]`), tests pass a stand-in."""

    metric = "FID"
    name = "inception-v3"

    def __init__(self, weights_path: str | None = None, factory: Callable | None = None):
        self.model = (factory or _fidelity_inception)(weights_path)
        self.model.eval()

    def to(self, device) -> InceptionFeatures:
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # torch-fidelity takes uint8 RGB (N, 3, H, W) and resizes to 299 itself
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        feats, logits = self.model(x)
        return feats, logits


def _fidelity_inception(weights_path: str | None):
    """torch-fidelity's Inception-v3 with weights we read ourselves without running pickled code
    (`inception_state_dict`); torch-fidelity gets them as an in-memory archive of plain tensors, so its
    own `torch.load` (no `weights_only` argument) never sees the user's file or its download cache."""
    state = inception_state_dict(weights_path) if weights_path is not None else None  # refuse a bad file first
    try:
        import torch_fidelity.feature_extractor_inceptionv3 as tfi
    except ImportError as e:
        raise TrilemmaError(f"Inception features need torch-fidelity: pip install 'trilemma[inception]' ({e})") from None
    where = str(weights_path) if weights_path is not None else "torch-fidelity's Inception-v3 weights"
    if state is None:
        state = _download_inception_state(getattr(tfi, "URL_INCEPTION_V3", None))
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    try:
        return tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                               feature_extractor_weights_path=buf)
    except RuntimeError as e:  # load_state_dict: missing / unexpected keys, wrong shapes
        raise TrilemmaError(f"{where}: not torch-fidelity's Inception-v3 weights ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    """A one-line reason for exception `e` (torch's weights-only refusal: the unpickler's own line, not the
    preamble above it)."""
    return error_line(e, str(e).split("WeightsUnpickler error:", 1)[-1])


def _plain_state_dict(obj, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in obj.items()):
        raise TrilemmaError(f"{where}: not a state dict (a mapping of names to tensors)")
    return obj


def inception_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a local Inception weights file (`inception_weights`). Only safetensors is accepted: a
    pickled `.pth` is refused by name before anything reads it, since unpickling can run code (and even
    `weights_only=True` has had bypasses)."""
    p = Path(path).expanduser()
    if p.suffix != ".safetensors":
        raise TrilemmaError(
            f"{p}: Inception weights must be a .safetensors file (pickled weights can run code when loaded); "
            "convert a trusted .pth once: python -c \"import torch, safetensors.torch as st; "
            "st.save_file(torch.load('IN.pth', weights_only=True), 'OUT.safetensors')\"")
    if not p.is_file():
        raise TrilemmaError(f"{p}: Inception weights file not found")
    return _plain_state_dict(read_safetensors(p)[0], str(p))


def _download_inception_state(url: str | None) -> dict[str, torch.Tensor]:
    """torch-fidelity's default weights through torch.hub's cache, read with weights_only=True (torch.hub
    defaults to False, so a replaced cache file could otherwise run code)."""
    if not url:
        raise TrilemmaError("this torch-fidelity names no Inception-v3 weights URL; set inception_weights to a local file")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, weights_only=True)
    except Exception as e:  # no network, a refused (non-tensor) cache file, ...
        raise TrilemmaError(f"{url}: cannot load Inception-v3 weights ({_first_line(e)}); download it, convert it to "
                            f".safetensors and set inception_weights") from None
    return _plain_state_dict(state, url)


# --- loading the shipped networks ----------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 of the file at `path`, what FeatureNetSpec.sha256 pins."""
    return sha256_file(path).hexdigest()


def asset_path(name: str) -> Path:
    """The path of file `name` shipped in trilemma/assets (e.g. a FeatureNetSpec.file)."""
    return Path(str(resources.files("trilemma") / "assets" / name))


def _load_net_file(path: Path) -> FeatureNet:
    """A FeatureNet from a safetensors file whose metadata holds its FeatureNetConfig as JSON."""
    state, meta = read_safetensors(path)
    if meta.get("format") != "trilemma-featnet":
        raise TrilemmaError(f"{path}: not a trilemma feature network (format field missing or wrong)")
    net = FeatureNet(FeatureNetConfig(**json.loads(meta["config"])))
    net.load_state_dict(state)
    return net.eval()


def load_feature_net(name: str, path: str | Path | None = None, sha256: str | None = None) -> ClassifierFeatures:
    """The shipped classifier for dataset `name` (or the file at `path`), refusing a file whose SHA-256
    differs from the pinned one."""
    if name not in FEATURE_NETS:
        raise TrilemmaError(f"no feature network for {name!r}; shipped: {', '.join(FEATURE_NETS)}")
    spec = FEATURE_NETS[name]
    p = Path(path) if path is not None else asset_path(spec.file)
    if not p.is_file():
        raise TrilemmaError(f"{p}: feature network file not found (train it with `{spec.command}`)")
    expected = spec.sha256 if sha256 is None else sha256
    got = file_sha256(p)
    if got != expected:
        raise TrilemmaError(f"{p}: SHA-256 {got[:16]}... does not match the pinned {expected[:16] or '(none)'}...; "
                            f"retrain with `{spec.command}` and update FEATURE_NETS")
    return ClassifierFeatures(_load_net_file(p), spec.metric, name)


def feature_net_for(dataset: str, inception: bool = False, inception_weights: str | None = None):
    """The extractor the benchmark uses for `dataset`: its shipped classifier, or Inception."""
    if inception:
        return InceptionFeatures(inception_weights)
    return load_feature_net(dataset)


@torch.no_grad()
def extract_features(extractor, x: torch.Tensor, batch_size: int = 500, device=None) -> tuple[np.ndarray, np.ndarray]:
    """Run `extractor` over x in batches: (features (N, D) float64, logits (N, C) float64)."""
    device = torch.device(device or "cpu")
    extractor.to(device)
    feats, logits = [], []
    for i in range(0, len(x), batch_size):
        f, lg = extractor(x[i : i + batch_size].to(device, torch.float32))
        feats.append(f.double().cpu())
        logits.append(lg.double().cpu())
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()


# --- training (scripts/train_feature_net.py) -------------------------------------------------------


@dataclass
class FeatureTrainConfig:
    epochs: int = 6
    batch_size: int = 128
    lr: float = 2e-3  # AdamW peak: one epoch of linear warm-up, then cosine decay to 0
    weight_decay: float = 5e-4
    shift: int = 2  # random translation in pixels (augmentation)
    hflip: bool = True  # horizontal flips (off for digits: a flipped 3 is no digit)
    seed: int = 0


TRAIN_DEFAULTS = {
    "digits": (FeatureNetConfig(image_size=8, width=32, feature_dim=128, dropout=0.3),
               FeatureTrainConfig(epochs=60, batch_size=64, shift=1, hflip=False)),
    "fashion-mnist": (FeatureNetConfig(image_size=28, width=32, feature_dim=128, dropout=0.3),
                      FeatureTrainConfig(epochs=6, batch_size=128, shift=2, hflip=True)),
}


def _augment(x: torch.Tensor, shift: int, hflip: bool, g: torch.Generator) -> torch.Tensor:
    """Random translation by up to `shift` pixels (padding with background -1) and horizontal flips."""
    n, _, h, w = x.shape
    if shift:
        xp = F.pad(x, (shift,) * 4, value=-1.0)
        dy, dx = torch.randint(0, 2 * shift + 1, (2,), generator=g).tolist()  # one shift per batch: cheap
        x = xp[:, :, dy : dy + h, dx : dx + w]
    if hflip:
        flip = torch.rand(n, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


@torch.no_grad()
def accuracy(net: FeatureNet, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    net.eval()
    correct = sum((net(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum().item()
                  for i in range(0, len(x), batch_size))
    return correct / len(x)


def train_feature_net(
    dataset: str,
    out: str | Path,
    net_cfg: FeatureNetConfig | None = None,
    train_cfg: FeatureTrainConfig | None = None,
    data_cfg=None,
    progress: bool = True,
) -> dict:
    """Train the classifier for `dataset` on its train split, write it to `out` (safetensors with its
    config in the metadata, atomically) and return {test_accuracy, sha256, seconds, ...}."""
    from safetensors.torch import save_file
    from tqdm import tqdm

    from .data import DataConfig, load_dataset

    if dataset not in TRAIN_DEFAULTS:
        raise TrilemmaError(f"no feature network recipe for {dataset!r}; choose one of {', '.join(TRAIN_DEFAULTS)}")
    d_net, d_train = TRAIN_DEFAULTS[dataset]
    net_cfg, train_cfg = net_cfg or d_net, train_cfg or d_train
    data_cfg = data_cfg or DataConfig(name=dataset)
    train, test = load_dataset(data_cfg, "train"), load_dataset(data_cfg, "test")
    torch.manual_seed(train_cfg.seed)
    g = torch.Generator().manual_seed(train_cfg.seed)
    net = FeatureNet(net_cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    per_epoch = math.ceil(len(train) / train_cfg.batch_size)
    total, warm = per_epoch * train_cfg.epochs, per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    t0 = time.perf_counter()
    bar = tqdm(total=total, desc=f"featnet {dataset}", disable=not progress)
    for _ in range(train_cfg.epochs):
        net.train()
        perm = torch.randperm(len(train), generator=g)
        for i in range(0, len(train), train_cfg.batch_size):
            idx = perm[i : i + train_cfg.batch_size]
            x = _augment(train.x[idx], train_cfg.shift, train_cfg.hflip, g)
            loss = F.cross_entropy(net(x), train.y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    acc = accuracy(net, test.x, test.y)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "trilemma-featnet", "dataset": dataset, "config": json.dumps(asdict(net_cfg)),
            "train": json.dumps(asdict(train_cfg)), "test_accuracy": f"{acc:.4f}"}
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    atomic_write(out, lambda tmp: save_file(state, str(tmp), metadata=meta))
    return {"dataset": dataset, "test_accuracy": acc, "sha256": file_sha256(out), "seconds": time.perf_counter() - t0,
            "parameters": sum(p.numel() for p in net.parameters()), "path": str(out)}

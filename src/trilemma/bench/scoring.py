"""Scoring a sample set against the reference split, behind one interface for every kind of data:

    points (toy2d)  quality: high-quality % (3-std rule), sliced Wasserstein; diversity: modes covered
    images          quality: FD on the dataset's feature classifier, precision (k=3), KID;
                    diversity: recall (k=3), density / coverage (k=5), class entropy and KL to uniform

A scorer holds everything fixed across rows (the reference set, its features, the metric definitions);
`floor` scores the training split like a model's samples: what a perfect model would score.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import metrics as M
from ..errors import TrilemmaError

__all__ = ["Scorer", "PointScorer", "ImageScorer", "make_scorer", "average"]


class Scorer:
    """The interface: `score(x, seed)` -> {metric: value}; `quality` and `diversity` name the headline metrics,
    `lower_is_better` the direction of `quality`; `reference` and `train` are the two data splits."""

    quality: str
    diversity: str | None
    lower_is_better: bool
    plot_reference: torch.Tensor | None = None  # drawn under a row's samples (points), or nothing (images)

    def __init__(self, data_cfg, cfg, device: torch.device):
        from ..data import load_dataset

        self.cfg, self.device = cfg, device
        self.reference = load_dataset(data_cfg, cfg.reference_split)
        self.train = load_dataset(data_cfg, "train" if cfg.reference_split == "test" else "test")

    def score(self, x: torch.Tensor, seed: int) -> dict:
        """All metrics of one sample set x (N, ...) against the reference; a set with a non-finite sample
        scores only the share of them."""
        x = x.detach().cpu().float()
        if not torch.isfinite(x).all():
            return {"nonfinite_%": 100.0 * (~torch.isfinite(x.flatten(1)).all(1)).float().mean().item()}
        return self.metrics(x, seed)

    def metrics(self, x: torch.Tensor, seed: int) -> dict:
        raise NotImplementedError

    def shown(self, x: torch.Tensor) -> torch.Tensor:
        """The samples a row's picture shows."""
        raise NotImplementedError

    def floor(self, seeds: list[int]) -> dict:
        """The data's own score: train-split samples scored like a model's (the best a model can do)."""
        per_seed = []
        for s in seeds:
            g = torch.Generator().manual_seed(10_000 + s)
            n = min(self.cfg.num_samples, len(self.train))
            idx = torch.randperm(len(self.train), generator=g)[:n]
            per_seed.append(self.score(self.train.x[idx], s))
        return average(per_seed)


class PointScorer(Scorer):
    """2-D points: modes covered and high-quality % where the toy has discrete modes (grid25, ring8), sliced
    Wasserstein distance to the reference always."""

    def __init__(self, data_cfg, cfg, device):
        from ..data import toy_modes

        super().__init__(data_cfg, cfg, device)
        try:
            self.modes = toy_modes(data_cfg.toy, data_cfg.unit_variance)  # grid25, ring8
        except TrilemmaError:
            self.modes = None  # swissroll, moons, checkerboard: no discrete modes
        self.ref_x = self.reference.x[: cfg.num_samples]
        self.quality, self.diversity = ("high_quality_%", "modes") if self.modes else ("SW", None)
        self.lower_is_better = self.modes is None
        self.plot_reference = self.reference.x[:2000]

    def shown(self, x):
        return x[: self.cfg.num_samples]  # a scatter plot of every sample

    def metrics(self, x, seed):
        out = {}
        if self.modes is not None:
            st = M.mode_stats(x, self.modes[0], self.modes[1])
            out["modes"] = int(st["modes_covered"])
            out["high_quality_%"] = 100.0 * float(st["high_quality_fraction"])
        out["SW"] = float(M.sliced_wasserstein(x, self.ref_x, seed=seed))
        return out


class ImageScorer(Scorer):
    """Images, on the features of the dataset's classifier (or Inception): FD, KID, precision / recall,
    density / coverage, and the class histogram's entropy and KL to uniform."""

    def __init__(self, data_cfg, cfg, device):
        from ..features import extract_features, feature_net_for

        super().__init__(data_cfg, cfg, device)
        self.extractor = feature_net_for(self.reference.name, cfg.features == "inception", cfg.inception_weights)
        self.fd_name = self.extractor.metric
        self.ref_f, ref_logits = extract_features(self.extractor, self.reference.x, device=device)
        # the reference's k-NN radii are the same for every row: computed once, not twice per row
        self.ref_radii = {k: M.knn_radii(torch.from_numpy(self.ref_f), k) for k in (3, 5)}
        self.num_classes = ref_logits.shape[1]
        self.quality, self.diversity, self.lower_is_better = self.fd_name, "recall", True

    def shown(self, x):
        return x[: self.cfg.grid_images]  # a grid of the first images

    def metrics(self, x, seed):
        from ..features import extract_features

        f, logits = extract_features(self.extractor, x, device=self.device)
        pr = M.precision_recall(self.ref_f, f, k=3, real_radii=self.ref_radii[3])
        dc = M.density_coverage(self.ref_f, f, k=5, real_radii=self.ref_radii[5])
        kid_mean, _ = M.kernel_distance(self.ref_f, f, seed=seed)
        hist = M.class_histogram(logits, self.num_classes)
        return {
            self.fd_name: float(M.frechet_distance_from_features(f, self.ref_f)),
            "KID": float(kid_mean),
            "precision": float(pr["precision"]),
            "recall": float(pr["recall"]),
            "density": float(dc["density"]),
            "coverage": float(dc["coverage"]),
            "class_entropy": float(M.class_entropy(hist)),
            "class_KL": float(M.kl_to_uniform(hist)),
        }


def make_scorer(data_cfg, cfg, device: torch.device) -> Scorer:
    """The scorer for a dataset's kind of data: 2-D points (toy2d) or images."""
    return (PointScorer if data_cfg.name == "toy2d" else ImageScorer)(data_cfg, cfg, device)


def average(per_seed: list[dict]) -> dict:
    """Metrics averaged over seeds, with the standard deviation as `<metric>_std` when there are several."""
    out = {}
    for k in per_seed[0]:
        vals = [d[k] for d in per_seed if k in d]
        out[k] = float(np.mean(vals))
        if len(vals) > 1:
            out[k + "_std"] = float(np.std(vals, ddof=1))
    return out

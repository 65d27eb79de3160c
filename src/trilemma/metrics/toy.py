"""Toy 2-D metrics: mode coverage and high-quality fraction (the GAN toy protocol), sliced and exact Wasserstein.

`mode_stats` follows the protocol of VEEGAN (Srivastava et al. 2017), PacGAN (Lin et al. 2018) and DDGAN
(Xiao et al. 2022) on the 25-Gaussian grid and 8-Gaussian ring; the modes and per-mode std come from
`trilemma.data.toy_modes(name)` in the same scaled coordinates as the samples.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from ._array import as_features

EXACT_W2_MAX_POINTS = 5000  # the Hungarian solver is O(n^3) time and the cost matrix O(n^2) memory


def mode_stats(samples, modes, std: float, n_std: float = 3.0) -> dict:
    """Fraction of high-quality samples and number of covered modes (VEEGAN / PacGAN / DDGAN toy protocol).

    A sample (N, D) is high-quality when its Euclidean distance to the nearest mode (K, D) is <= n_std * std
    (inclusive, so a point exactly on the 3-std circle counts). A mode is covered when it is the nearest mode
    of at least one high-quality sample. per_mode_counts (K,) counts high-quality samples by nearest mode.
    """
    x, mu = as_features(samples, "samples"), as_features(modes, "modes")
    if x.shape[0] == 0:
        raise ValueError("mode_stats needs at least one sample")
    if x.shape[1] != mu.shape[1]:
        raise ValueError(f"mode_stats: samples have D={x.shape[1]} but modes have D={mu.shape[1]}")
    # direct differences (not the matmul expansion): exact enough to decide points near the n_std boundary
    dist = np.sqrt(((x[:, None, :] - mu[None, :, :]) ** 2).sum(-1))  # (N, K)
    nearest = dist.argmin(1)  # (N,)
    hq = dist[np.arange(len(x)), nearest] <= n_std * float(std)  # (N,)
    counts = np.bincount(nearest[hq], minlength=len(mu))  # (K,)
    return {
        "high_quality_fraction": float(hq.mean()),
        "modes_covered": int((counts > 0).sum()),
        "num_modes": len(mu),
        "per_mode_counts": [int(c) for c in counts],
    }


def sliced_wasserstein(a, b, projections: int = 1024, seed: int = 0, p: float = 2) -> float:
    """Sliced Wasserstein-p distance (Rabin et al. 2011; Bonneel et al. 2015), Monte Carlo over unit directions.

    SW_p = (E_theta W_p^p(theta.a, theta.b))^{1/p}; each 1-D W_p^p is the mean |difference|^p of sorted
    projections. With unequal sizes the smaller set is read at L = max(n, m) quantile levels linspace(0, 1, L)
    (linear interpolation, as np.quantile), which reproduces plain sorting when sizes are equal.
    """
    x, y = as_features(a, "a"), as_features(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"sliced_wasserstein: a has D={x.shape[1]} but b has D={y.shape[1]}")
    if len(x) == 0 or len(y) == 0 or projections < 1 or p < 1:
        raise ValueError(
            f"sliced_wasserstein needs non-empty sets, projections >= 1 and p >= 1, got "
            f"{len(x)} and {len(y)} points, projections={projections}, p={p}"
        )
    theta = np.random.default_rng(seed).standard_normal((projections, x.shape[1]))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)  # (P, D) uniform on the unit sphere
    big, small = (x, y) if len(x) >= len(y) else (y, x)
    # linear-interpolation quantiles of the smaller set at levels linspace(0, 1, L), i.e. at sorted positions
    # pos = level * (n - 1): np.quantile's default rule, done once for all projections (np.quantile per
    # column is ~100x slower); for n == L, pos is integral and this is plain sorting
    pos = np.linspace(0.0, len(small) - 1.0, len(big))  # (L,)
    lo = np.minimum(np.floor(pos).astype(np.int64), len(small) - 1)
    hi = np.minimum(lo + 1, len(small) - 1)
    frac = (pos - lo)[:, None]  # (L, 1)
    total = 0.0
    for s in range(0, projections, 128):  # projection chunks bound memory at (L, 128)
        t = theta[s : s + 128].T  # (D, c)
        qb = np.sort(big @ t, axis=0)  # (L, c)
        ss = np.sort(small @ t, axis=0)  # (n, c)
        qs = ss if len(small) == len(big) else ss[lo] + frac * (ss[hi] - ss[lo])  # (L, c)
        total += (np.abs(qb - qs) ** p).mean(0).sum()
    return float((total / projections) ** (1.0 / p))


def wasserstein_exact(a, b) -> float:
    """Exact W2 between two equal-size empirical point clouds: optimal assignment on squared distances."""
    x, y = as_features(a, "a"), as_features(b, "b")
    if len(x) != len(y) or x.shape[1] != y.shape[1]:
        raise ValueError(f"wasserstein_exact needs two clouds of equal size and dimension, got {x.shape} and {y.shape}")
    if len(x) == 0 or len(x) > EXACT_W2_MAX_POINTS:
        raise ValueError(
            f"wasserstein_exact handles 1..{EXACT_W2_MAX_POINTS} points (O(n^3) assignment), got {len(x)}; "
            "use sliced_wasserstein for larger sets"
        )
    cost = cdist(x, y, "sqeuclidean")  # (n, n), computed per pair: no cancellation for close points
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))

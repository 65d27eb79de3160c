"""Frechet distance between Gaussian fits of features (FID with Inception features) and the kernel distance (KID).

Both take (N, D) features of real and generated samples from the same feature network; which network
(Inception-v3, a small dataset classifier) decides the name in a report, not the arithmetic here.
"""

from __future__ import annotations

import numpy as np

from ._array import as_features, as_numpy_f64


def feature_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """Float64 mean (D,) and unbiased covariance (D, D) of features (N, D): the Gaussian fit in FID (Heusel 2017)."""
    x = as_features(feats, "feats")
    if x.shape[0] < 2:
        raise ValueError(f"feature_stats needs at least 2 samples for a covariance, got {x.shape[0]}")
    # atleast_2d: np.cov returns a 0-d array for D = 1
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix through eigh; rounding-level negative eigenvalues are clipped to 0."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, S1) and N(mu2, S2) (Dowson & Landau 1982; the FID formula of Heusel et al. 2017).

    d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^{1/2} S2 S1^{1/2})^{1/2}).

    Both square roots S1^{1/2}, S2^{1/2} are symmetric PSD ones from eigh (no scipy.linalg.sqrtm of the
    non-symmetric S1 @ S2, so no complex residue to discard and no failure for singular covariances, N < D).
    The cross trace is the nuclear norm of A = S2^{1/2} S1^{1/2}, since A^T A = S1^{1/2} S2 S1^{1/2}: summing
    A's singular values keeps null directions at ~1e-16 * ||A|| each, where sqrt(eigvalsh(A^T A)) turns
    their rounding into ~1e-8 * ||A|| each (a 128-dim FD of a 50-sample set with itself: 1e-11 vs 6e-4).
    """
    mu1, mu2 = np.atleast_1d(as_numpy_f64(mu1)), np.atleast_1d(as_numpy_f64(mu2))
    s1, s2 = np.atleast_2d(as_numpy_f64(sigma1)), np.atleast_2d(as_numpy_f64(sigma2))
    d = mu1.shape[0]
    if mu1.ndim != 1 or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"frechet_distance: shapes do not match: mu1 {mu1.shape}, sigma1 {s1.shape}, "
            f"mu2 {mu2.shape}, sigma2 {s2.shape}"
        )
    # symmetrise first: covariances from np.cov are symmetric, but user-given ones may carry rounding asymmetry
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    cross = np.linalg.svd(_psd_sqrt(s2) @ _psd_sqrt(s1), compute_uv=False).sum()  # tr((S1^1/2 S2 S1^1/2)^1/2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * cross)


def frechet_distance_from_features(a, b) -> float:
    """Frechet distance between the Gaussian fits of features a (N, D) and b (M, D) (FID, Heusel et al. 2017)."""
    return frechet_distance(*feature_stats(a), *feature_stats(b))


def kernel_distance(a, b, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD^2 with the cubic polynomial kernel (Binkowski et al. 2018): KID on Inception features.

    k(x, y) = (x.y / D + 1)^3. Each of `subsets` draws picks m = min(subset_size, N, M) rows of a and of b
    without replacement; returns the mean and the (population) std of the per-subset estimates, as in the
    reference implementation. Deterministic under `seed`.
    """
    x, y = as_features(a, "a"), as_features(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"kernel_distance: feature sizes differ: a has D={x.shape[1]}, b has D={y.shape[1]}")
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise ValueError(f"kernel_distance needs subsets of at least 2 samples, got {m}")
    if subsets < 1:
        raise ValueError(f"kernel_distance needs subsets >= 1, got {subsets}")
    d = x.shape[1]
    rng = np.random.default_rng(seed)
    mmds = np.empty(subsets)
    for i in range(subsets):
        xs = x[rng.choice(x.shape[0], m, replace=False)]  # (m, D)
        ys = y[rng.choice(y.shape[0], m, replace=False)]  # (m, D)
        kxx = (xs @ xs.T / d + 1.0) ** 3  # (m, m)
        kyy = (ys @ ys.T / d + 1.0) ** 3
        kxy = (xs @ ys.T / d + 1.0) ** 3
        # unbiased: within-set sums drop the diagonal k(x_i, x_i); the cross term keeps all m^2 pairs
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        mmds[i] = within - 2.0 * kxy.mean()
    return float(mmds.mean()), float(mmds.std())

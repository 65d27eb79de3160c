"""Tests for trilemma.metrics: Frechet/kernel distances, k-NN precision/recall/density/coverage, toy-mode
statistics, Wasserstein distances and class balance. Oracles: closed forms, scipy's sqrtm, the `prdc` package."""

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from trilemma.data import sample_toy, toy_modes
from trilemma.metrics import (
    class_entropy,
    class_histogram,
    density_coverage,
    feature_stats,
    frechet_distance,
    frechet_distance_from_features,
    kernel_distance,
    kl_to_uniform,
    mode_stats,
    prdc,
    precision_recall,
    sliced_wasserstein,
    wasserstein_exact,
)


@pytest.fixture(autouse=True)
def _single_threaded_blas():
    """numpy's BLAS on one thread: these matrices are tiny, and a second thread pool spinning next to torch's
    (and the machine's other jobs) on a 2-core box turns milliseconds per matmul into seconds per test."""
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency, so always installed with trilemma

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _clusters(rng, centers, per_class):
    """Isotropic unit-variance Gaussian clusters around `centers` (C, D): (C * per_class, D)."""
    c, d = centers.shape
    return np.repeat(centers, per_class, axis=0) + rng.standard_normal((c * per_class, d))


# --- identical sets, dropped classes -----------------------------------------------------------------


def test_identical_sets_are_perfect():
    feats = np.random.default_rng(0).standard_normal((400, 16)) @ np.diag(np.linspace(0.5, 2.0, 16))
    fd = frechet_distance_from_features(feats, torch.from_numpy(feats))  # numpy and torch mix freely
    scale = np.trace(feature_stats(feats)[1])
    assert abs(fd) < 1e-8 * scale, f"FD of a set with itself is {fd:.3e} (trace scale {scale:.3g})"
    out = prdc(feats, feats, k=5)
    for name in ("precision", "recall", "coverage"):
        assert out[name] == 1.0, f"{name} of a set with itself is {out[name]}, expected exactly 1"
    assert abs(out["density"] - 1.0) < 0.05, f"density of a set with itself is {out['density']}, expected ~1"


def test_dropping_half_the_classes_lowers_recall_and_coverage_not_precision():
    rng = np.random.default_rng(1)
    # 8-D, not higher: with 100 points per class, k-NN balls in 16-D already miss ~10% of fresh same-class
    # points, so even a perfect model's precision sits near 0.9
    centers = 4.0 * rng.standard_normal((10, 8))  # well separated: typical center distance ~ 4 * sqrt(16)
    real = _clusters(rng, centers, 100)  # (1000, 8)
    fake = _clusters(rng, centers[:5], 100)  # (500, 8): classes 5..9 dropped
    out = prdc(real, fake, k=5)
    assert out["precision"] > 0.9, f"precision {out['precision']:.3f} should stay high: every fake is realistic"
    assert out["recall"] < 0.7, f"recall {out['recall']:.3f} should drop with half the classes missing"
    assert out["coverage"] < 0.7, f"coverage {out['coverage']:.3f} should drop with half the classes missing"
    full = prdc(real, _clusters(rng, centers, 50), k=5)  # all classes present: recall/coverage recover
    assert full["recall"] > out["recall"] + 0.2, f"recall {full['recall']:.3f} (all classes) vs {out['recall']:.3f}"
    assert full["coverage"] > out["coverage"] + 0.2, f"coverage {full['coverage']:.3f} vs {out['coverage']:.3f}"


def test_frechet_distance_grows_with_noise():
    rng = np.random.default_rng(2)
    real = rng.standard_normal((2000, 8))
    eps = rng.standard_normal((2000, 8))
    levels = [0.25, 0.5, 1.0, 2.0, 4.0]
    fds = [frechet_distance_from_features(real, real + s * eps) for s in levels]
    assert fds[0] > 0, f"noise 0.25 gives FD {fds[0]:.3e}, expected > 0"
    assert all(b > a for a, b in itertools.pairwise(fds)), f"FD not increasing with noise {levels}: {fds}"


# --- Frechet distance against independent oracles ----------------------------------------------------


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((300, 8)) @ rng.standard_normal((8, 8))
    b = 0.5 + rng.standard_normal((250, 8)) @ rng.standard_normal((8, 8))
    mu1, s1 = feature_stats(a)
    mu2, s2 = feature_stats(b)
    # the usual formula from the FID reference code, written independently of ours
    cross = scipy.linalg.sqrtm(s1 @ s2).real
    oracle = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(oracle, rel=1e-6), f"FD {ours!r} vs scipy sqrtm oracle {oracle!r}"


def test_frechet_distance_closed_form_diagonal_gaussians():
    rng = np.random.default_rng(4)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    v1, v2 = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    expected = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum())
    got = frechet_distance(mu1, np.diag(v1), torch.from_numpy(mu2), torch.from_numpy(np.diag(v2)))
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12), f"FD {got!r} vs closed form {expected!r}"


def test_frechet_distance_singular_covariance_with_itself_is_zero():
    # N < D: rank-deficient covariances, where sqrt(eigenvalues) of the rounding noise would add up to ~1e-3
    feats = np.random.default_rng(9).standard_normal((50, 128)) @ np.random.default_rng(10).standard_normal((128, 128))
    scale = np.trace(feature_stats(feats)[1])
    fd = frechet_distance_from_features(feats, feats)
    assert abs(fd) < 1e-12 * scale, f"FD of a 50 x 128 set with itself is {fd:.3e} (trace scale {scale:.3g})"


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes do not match") as excinfo:
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    assert "\n" not in str(excinfo.value)


# --- precision / recall / density / coverage against the prdc package --------------------------------


@pytest.mark.parametrize("k", [3, 5])
def test_prdc_matches_reference_package(k, capsys):
    compute_prdc = pytest.importorskip("prdc").compute_prdc
    rng = np.random.default_rng(5)
    real = rng.standard_normal((300, 16))
    fake = 0.3 + 1.2 * rng.standard_normal((250, 16))  # partly overlapping, so no metric is trivially 0 or 1
    ref = compute_prdc(real, fake, nearest_k=k)
    capsys.readouterr()  # the reference prints the set sizes
    ours = prdc(real, fake, k=k)
    for name, value in ref.items():
        assert abs(ours[name] - float(value)) <= 1e-12, f"k={k} {name}: ours {ours[name]!r} vs prdc {value!r}"
    assert 0 < ours["precision"] < 1 and 0 < ours["recall"] < 1, f"degenerate test data: {ours}"
    assert ours == prdc(real, fake, k=k, chunk_size=7), "chunk_size=7 changed the result"
    assert ours == prdc(torch.from_numpy(real), torch.from_numpy(fake), k=k, chunk_size=4096)
    assert precision_recall(real, fake, k=k) == {"precision": ours["precision"], "recall": ours["recall"]}
    assert density_coverage(real, fake, k=k) == {"density": ours["density"], "coverage": ours["coverage"]}


def test_prdc_rejects_bad_input():
    with pytest.raises(ValueError, match="k=5 for 5 points"):
        prdc(np.zeros((5, 2)), np.zeros((9, 2)), k=5)
    with pytest.raises(ValueError, match="features"):
        prdc(np.zeros((9, 2)), np.zeros((9, 3)))


# --- toy 2-D: the 3-std rule ---------------------------------------------------------------------------


def test_mode_stats_three_std_rule_on_hand_placed_points():
    modes, std = toy_modes("grid25")
    m = modes.double().numpy()  # (25, 2)
    center = int(np.flatnonzero((m == 0).all(1))[0])  # the grid's (0, 0) mode
    pts = np.stack(
        [
            m[0] + [2.9 * std, 0.0],  # inside: high quality, covers mode 0
            m[0] + [0.0, -0.5 * std],  # inside: a second hit on mode 0
            m[1] + 2.9 * std * np.array([0.6, 0.8]),  # inside (2.9 std along a diagonal): covers mode 1
            m[center] + [3.0 * std, 0.0],  # exactly on the boundary: counts (<=)
            m[5] + 3.1 * std * np.array([0.8, -0.6]),  # nearest mode 5 but outside: no quality, no coverage
            (m[0] + m[6]) / 2,  # between modes: nowhere near
        ]
    )
    out = mode_stats(pts, modes, std)
    counts = np.zeros(25, dtype=int)
    counts[[0, 1, center]] = [2, 1, 1]
    assert out["per_mode_counts"] == counts.tolist(), f"per-mode counts {out['per_mode_counts']}"
    assert out["modes_covered"] == 3 and out["num_modes"] == 25, f"covered {out['modes_covered']}/{out['num_modes']}"
    assert out["high_quality_fraction"] == 4 / 6, f"high-quality fraction {out['high_quality_fraction']}"
    wider = mode_stats(pts, modes, std, n_std=3.2)  # the 3.1-std point was nearest to mode 5 all along
    assert wider["per_mode_counts"][5] == 1 and wider["modes_covered"] == 4, f"n_std=3.2: {wider}"


@pytest.mark.parametrize("toy", ["grid25", "ring8"])
def test_mode_stats_on_fresh_and_collapsed_samples(toy):
    modes, std = toy_modes(toy)
    k = len(modes)
    pts = sample_toy(toy, 100 * k, torch.Generator().manual_seed(0))
    out = mode_stats(pts, modes, std)
    assert out["modes_covered"] == k, f"{toy}: fresh data covers {out['modes_covered']}/{k} modes"
    # a 2-D isotropic Gaussian puts 1 - exp(-9/2) = 0.9889 of its mass within 3 std (binomial sd ~0.002 here)
    expected = 1 - math.exp(-4.5)
    assert abs(out["high_quality_fraction"] - expected) < 0.01, (
        f"{toy}: high-quality fraction {out['high_quality_fraction']:.4f}, expected ~{expected:.4f}"
    )
    collapsed = modes[3] + 0.5 * std * torch.randn(500, 2, generator=torch.Generator().manual_seed(1))
    out = mode_stats(collapsed, modes, std)
    assert out["modes_covered"] == 1 and out["per_mode_counts"][3] == 500, f"{toy} collapsed: {out}"


# --- Wasserstein distances ---------------------------------------------------------------------------


def test_sliced_wasserstein_zero_and_translation_closed_form():
    rng = np.random.default_rng(6)
    a = rng.standard_normal((1000, 2))
    v = np.array([0.9, -1.2])  # |v| = 1.5
    assert sliced_wasserstein(a, a) == 0.0
    # translating a cloud moves every sorted projection by theta.v: SW_2^2 = E[(theta.v)^2] = |v|^2 / 2 in 2-D
    expected = np.linalg.norm(v) / math.sqrt(2)
    got = sliced_wasserstein(a, a + v, projections=4096)
    assert got == pytest.approx(expected, rel=0.03), f"SW of a shift {got:.4f} vs closed form {expected:.4f}"
    # unequal sizes go through quantiles: a half-size subsample of the shifted cloud is still ~|v| / sqrt(2)
    sub = sliced_wasserstein(a, a[::2] + v, projections=4096)
    assert sub == pytest.approx(expected, rel=0.05), f"SW with 1000 vs 500 points {sub:.4f} vs {expected:.4f}"
    assert sliced_wasserstein(a, a + v, seed=3) == sliced_wasserstein(torch.from_numpy(a), a + v, seed=3)


def test_wasserstein_exact_translation():
    rng = np.random.default_rng(7)
    a = rng.standard_normal((300, 2))
    v = np.array([0.3, 0.4])  # |v| = 0.5
    shuffled = (a + v)[rng.permutation(300)]  # the solver has to find the matching, not read it off row order
    got = wasserstein_exact(a, shuffled)
    assert abs(got - 0.5) < 1e-9, f"exact W2 of a translation by |v| = 0.5 is {got!r}"
    with pytest.raises(ValueError, match="equal size"):
        wasserstein_exact(a, a[:10])
    with pytest.raises(ValueError, match="5000"):
        wasserstein_exact(np.zeros((5001, 2)), np.zeros((5001, 2)))


# --- class balance ---------------------------------------------------------------------------------


def test_class_entropy_uniform_one_hot_and_empty_classes():
    c = 10
    uniform = class_histogram(torch.arange(200) % c, c)
    assert uniform.tolist() == [20] * c
    assert class_entropy(uniform) == pytest.approx(math.log(c), abs=1e-12)
    assert kl_to_uniform(uniform) == pytest.approx(0.0, abs=1e-12)
    logits = torch.full((30, c), -5.0)
    logits[:, 7] = 5.0  # every sample classified as class 7
    one_hot = class_histogram(logits, c)
    assert one_hot[7] == 30 and one_hot.sum() == 30, f"histogram {one_hot.tolist()}"
    assert class_entropy(one_hot) == 0.0
    assert kl_to_uniform(one_hot) == pytest.approx(math.log(c), abs=1e-12)
    assert class_entropy([3, 0, 3]) == pytest.approx(math.log(2), abs=1e-12), "0 log 0 must count as 0"
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        class_histogram(np.array([0, 10]), c)


# --- kernel (inception) distance ---------------------------------------------------------------------


def test_kernel_distance_near_zero_for_same_distribution_positive_for_shift():
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((600, 16)), rng.standard_normal((600, 16))
    shifted = 0.5 + rng.standard_normal((600, 16))
    kw = {"subsets": 20, "subset_size": 200}
    far, far_std = kernel_distance(a, shifted, **kw)
    same, _ = kernel_distance(a, a, **kw)
    fresh, _ = kernel_distance(a, b, **kw)
    assert far > 10 * far_std > 0, f"shifted set: KID {far:.4g} +- {far_std:.2g} should be clearly positive"
    for name, value in (("identical", same), ("same distribution", fresh)):
        assert abs(value) < 0.05 * far, f"{name}: KID {value:.3g} is not small next to the shift's {far:.3g}"
    assert kernel_distance(a, shifted, seed=5, **kw) == kernel_distance(a, shifted, seed=5, **kw)
    assert kernel_distance(a, shifted, seed=5, **kw) != kernel_distance(a, shifted, seed=6, **kw)


def test_precomputed_real_radii_give_the_same_scores():
    from trilemma.metrics import knn_radii, prdc

    g = np.random.default_rng(3)
    real, fake = g.standard_normal((200, 8)), g.standard_normal((150, 8)) + 0.2
    radii = knn_radii(torch.from_numpy(real), 5)
    assert prdc(real, fake, k=5, real_radii=radii) == prdc(real, fake, k=5)
    with pytest.raises(ValueError, match="real_radii"):
        prdc(real, fake, k=5, real_radii=radii[:10])

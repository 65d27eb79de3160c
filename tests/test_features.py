"""Feature classifiers: shipped weights load only with their pinned SHA-256 and classify the test splits
(issue 3, acceptance 2); Inception goes through the same extractor contract (stand-in network)."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from trilemma.data import DataConfig, FASHION_MNIST_DEFAULT, load_dataset
from trilemma.errors import TrilemmaError
from trilemma.features import (FEATURE_NETS, FeatureNetConfig, FeatureTrainConfig, InceptionFeatures, asset_path,
                               accuracy, extract_features, file_sha256, load_feature_net, train_feature_net)
from trilemma.metrics import frechet_distance_from_features


def test_pinned_hashes_match_the_shipped_files():
    for name, spec in FEATURE_NETS.items():
        path = asset_path(spec.file)
        assert path.is_file(), path
        assert file_sha256(path) == spec.sha256 == hashlib.sha256(path.read_bytes()).hexdigest(), name
        assert path.stat().st_size < 5 * 2**20, f"{path} is {path.stat().st_size} bytes: ship a few MB at most"


def test_digits_classifier_accuracy():
    net = load_feature_net("digits")
    test = load_dataset(DataConfig(name="digits"), "test")
    acc = accuracy(net.net, test.x, test.y)
    assert acc >= 0.97, f"digits feature net test accuracy {acc:.4f} < 0.97"
    # recorded on another machine: one near-tie image may flip with the CPU's float rounding
    assert abs(acc - FEATURE_NETS["digits"].test_accuracy) <= 1 / len(test) + 1e-12, (acc, FEATURE_NETS["digits"].test_accuracy)


@pytest.mark.slow
def test_fashion_mnist_classifier_accuracy():
    if not (Path(FASHION_MNIST_DEFAULT) / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
    net = load_feature_net("fashion-mnist")
    test = load_dataset(DataConfig(name="fashion-mnist"), "test")
    acc = accuracy(net.net, test.x, test.y)
    assert acc >= 0.90, f"Fashion-MNIST feature net test accuracy {acc:.4f} < 0.90"
    assert abs(acc - FEATURE_NETS["fashion-mnist"].test_accuracy) <= 1 / len(test) + 1e-12  # one near-tie image
    # the padded 32x32 variant is cropped back to what the net was trained on: same features
    padded = load_dataset(DataConfig(name="fashion-mnist", pad32=True), "test")
    f28, _ = extract_features(net, test.x[:64])
    f32, _ = extract_features(net, padded.x[:64])
    np.testing.assert_array_equal(f28, f32)


def test_a_tampered_file_is_refused(tmp_path):
    src = asset_path(FEATURE_NETS["digits"].file)
    bad = tmp_path / "featnet.safetensors"
    data = bytearray(src.read_bytes())
    data[-1] ^= 0x01  # one bit in the last weight
    bad.write_bytes(bytes(data))
    with pytest.raises(TrilemmaError, match="SHA-256"):
        load_feature_net("digits", path=bad)
    with pytest.raises(TrilemmaError, match="not found"):
        load_feature_net("digits", path=tmp_path / "missing.safetensors")
    with pytest.raises(TrilemmaError, match="no feature network"):
        load_feature_net("cifar10")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(TrilemmaError, match="safetensors"):
        load_feature_net("digits", path=junk, sha256=file_sha256(junk))


def test_training_recipe_writes_a_loadable_hashed_file(tmp_path):
    out = tmp_path / "net.safetensors"
    info = train_feature_net("digits", out, FeatureNetConfig(image_size=8, width=8, feature_dim=16),
                             FeatureTrainConfig(epochs=5, batch_size=64, shift=1, hflip=False), progress=False)
    assert info["sha256"] == file_sha256(out) and not list(tmp_path.glob(".*tmp*"))
    # 120 steps of a width-8 net: far from converged (0.61 seen), far above chance (0.1)
    assert info["test_accuracy"] > 0.4, f"five epochs should beat chance by far, got {info['test_accuracy']}"
    net = load_feature_net("digits", path=out, sha256=info["sha256"])
    assert net.net.cfg.width == 8 and net.metric == "FD-digits"
    test = load_dataset(DataConfig(name="digits"), "test")
    assert abs(accuracy(net.net, test.x, test.y) - info["test_accuracy"]) < 1e-9


class StandInInception(nn.Module):
    """Mimics torch-fidelity's FeatureExtractorInceptionV3 contract: uint8 (N, 3, H, W) in, a tuple of
    (pool features, logits) out. A fixed random projection of a 16x16 resize."""

    def __init__(self, weights_path):
        super().__init__()
        self.weights_path = weights_path
        g = torch.Generator().manual_seed(0)
        self.proj = nn.Parameter(torch.randn(3 * 16 * 16, 32, generator=g) / 28, requires_grad=False)
        self.cls = nn.Parameter(torch.randn(32, 10, generator=g), requires_grad=False)
        self.seen = []

    def forward(self, x):
        assert x.dtype == torch.uint8 and x.ndim == 4 and x.shape[1] == 3, (x.dtype, x.shape)
        self.seen.append((int(x.min()), int(x.max())))
        x = torch.nn.functional.interpolate(x.float() / 255, size=(16, 16), mode="bilinear", align_corners=False)
        f = x.flatten(1) @ self.proj
        return f, f @ self.cls


def test_inception_wiring_with_a_stand_in():
    ext = InceptionFeatures("weights.pth", factory=StandInInception)
    assert ext.model.weights_path == "weights.pth" and ext.metric == "FID"
    test = load_dataset(DataConfig(name="digits"), "test")
    f, logits = extract_features(ext, test.x, batch_size=100)
    assert f.shape == (len(test), 32) and logits.shape == (len(test), 10) and f.dtype == np.float64
    lo, hi = min(s[0] for s in ext.model.seen), max(s[1] for s in ext.model.seen)
    assert lo == 0 and hi == 255, f"[-1, 1] should map onto the full uint8 range, saw [{lo}, {hi}]"
    noise = torch.rand(test.x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fn, _ = extract_features(ext, noise)
    assert frechet_distance_from_features(f, fn) > 10 * frechet_distance_from_features(f[:150], f[150:])


def test_inception_without_torch_fidelity_is_a_one_line_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_fidelity(name, *a, **k):
        if name.startswith("torch_fidelity"):
            raise ImportError("No module named 'torch_fidelity'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_fidelity)
    with pytest.raises(TrilemmaError, match=r"trilemma\[inception\]"):
        InceptionFeatures()


class _Evil:
    """Unpickling this creates `marker`: proof that a loader ran the file's code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_inception_weights_are_refused_before_loading(tmp_path):
    """A grid's `inception_weights` reached torch-fidelity's torch.load (no weights_only). Now only a
    safetensors file is accepted: a pickle is refused with one line before anything reads it, and a pickle
    under a .safetensors name fails safetensors' parser; neither runs the pickled code. No torch-fidelity
    needed: the file is checked before it is imported."""
    from trilemma.features import feature_net_for

    marker = tmp_path / "pwned"
    for name, fragment in (("evil.pth", "must be a .safetensors file"), ("evil.pkl", "must be a .safetensors file"),
                           ("evil.safetensors", "not a readable safetensors file")):
        path = tmp_path / name
        torch.save({"w": _Evil(marker)}, path)
        with pytest.raises(TrilemmaError, match=fragment) as e:
            feature_net_for("digits", inception=True, inception_weights=str(path))
        assert "\n" not in str(e.value) and str(path) in str(e.value), str(e.value)
        assert not marker.exists(), f"{name}: the pickled code ran"
    with pytest.raises(TrilemmaError, match="not found"):
        feature_net_for("digits", inception=True, inception_weights=str(tmp_path / "missing.safetensors"))


class _FakeInception(nn.Module):
    """torch-fidelity's FeatureExtractorInceptionV3 as far as loading goes: it calls torch.load on
    whatever it is given as the weights path (no weights_only), then load_state_dict."""

    received = []

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        _FakeInception.received.append(feature_extractor_weights_path)
        assert feature_extractor_weights_path is not None, "torch-fidelity would download and load a pickle itself"
        self.load_state_dict(torch.load(feature_extractor_weights_path))


@pytest.fixture
def fake_fidelity(monkeypatch):
    import sys
    import types

    pkg, mod = types.ModuleType("torch_fidelity"), types.ModuleType("torch_fidelity.feature_extractor_inceptionv3")
    mod.FeatureExtractorInceptionV3 = _FakeInception
    mod.URL_INCEPTION_V3 = "https://example.invalid/weights-inception-00000000.pth"
    pkg.feature_extractor_inceptionv3 = mod
    monkeypatch.setitem(sys.modules, "torch_fidelity", pkg)
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", mod)
    _FakeInception.received.clear()
    return mod


def test_inception_weights_reach_torch_fidelity_as_tensors_only(tmp_path, monkeypatch, fake_fidelity):
    from safetensors.torch import save_file

    state = {"fc.weight": torch.arange(6.0).reshape(2, 3), "fc.bias": torch.tensor([1.0, -1.0])}
    path = tmp_path / "inception.safetensors"
    save_file(state, str(path))
    ext = InceptionFeatures(str(path))
    assert torch.equal(ext.model.fc.weight, state["fc.weight"]) and torch.equal(ext.model.fc.bias, state["fc.bias"])
    (given,) = _FakeInception.received
    assert not isinstance(given, (str, Path)), "torch-fidelity must get our tensors, never the user's path"
    # weights of another network: one line naming the file
    save_file({"conv.weight": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(TrilemmaError, match="not torch-fidelity's Inception-v3 weights") as e:
        InceptionFeatures(str(tmp_path / "other.safetensors"))
    assert "\n" not in str(e.value) and "other.safetensors" in str(e.value)
    # the default download goes through torch.hub with weights_only=True (torch.hub's default is False)
    calls = []

    def fake_hub(url, **kwargs):
        calls.append((url, kwargs))
        return dict(state)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_hub)
    ext = InceptionFeatures()
    assert calls == [(fake_fidelity.URL_INCEPTION_V3, {"map_location": "cpu", "progress": True, "weights_only": True})]
    assert torch.equal(ext.model.fc.weight, state["fc.weight"])

    def offline(url, **kwargs):
        raise OSError("network unreachable\nsecond line")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(TrilemmaError, match="network unreachable") as e:
        InceptionFeatures()
    assert "\n" not in str(e.value)

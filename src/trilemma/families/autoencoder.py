"""The first stage of latent diffusion (Rombach et al. 2022, sec. 3): a KL-regularised autoencoder.

Trained like any family: per-sample loss = reconstruction (L1 or L2, mean over pixels) + kl_weight *
KL(q(z | x) || N(0, I)) / pixels (LDM's weighting, where the pixel-summed reconstruction meets the
coordinate-summed KL at weight 1e-6) + optionally a perceptual distance on the dataset's feature
classifier. At every checkpoint the latent scale 1 / std(E[z | x]) is measured on training images with
the EMA encoder and saved, as the `ae.latent_scale` weight and the `latent_scale` field of config.json.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import TrilemmaError
from ..networks import build_autoencoder
from .base import Family
from ..bounds import gaussian_kl

RECON_LOSSES = ("l1", "l2")


@torch.no_grad()
def encode_all(ae, x: torch.Tensor, batch_size: int = 500, device=None, progress: bool = False,
               desc: str = "encode", scaled: bool = True) -> torch.Tensor:
    """ae.encode over x (N, ...) in batches on `device`: the scaled latents (N, c, h, w), on the CPU (with
    `scaled` false, the posterior means before the latent scale)."""
    from tqdm.auto import tqdm

    device = torch.device(device or "cpu")
    encode = ae.encode if scaled else (lambda xb: ae.posterior(xb)[0])
    out = []
    for i in tqdm(range(0, len(x), batch_size), desc=desc, disable=not progress, leave=False):
        out.append(encode(x[i : i + batch_size].to(device)).float().cpu())
    return torch.cat(out)


def measure_latent_scale(ae, x: torch.Tensor, batch_size: int = 500, device=None) -> float:
    """1 / std of the unscaled posterior means E[z | x] over all coordinates of the images x (LDM, sec. 4.3.2)."""
    return 1.0 / encode_all(ae, x, batch_size, device, scaled=False).double().std().item()


def stage_distance(net, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A perceptual distance per sample in the style of LPIPS (Zhang et al. 2018, eq. 1, unit weights): at each
    stage of the feature classifier, activations normalised to unit length over channels, squared difference
    averaged over positions; summed over stages."""
    d = x.new_zeros(x.shape[0])
    for fx, fy in zip(net.stage_outputs(x), net.stage_outputs(y)):
        d = d + (F.normalize(fx, dim=1) - F.normalize(fy, dim=1)).square().sum(1).flatten(1).mean(1)
    return d


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB for data in [-1, 1] (peak-to-peak 2): 10 log10(4 / MSE)."""
    mse = (x.double() - y.double()).square().flatten(1).mean(1)
    return 10.0 * torch.log10(4.0 / mse)


class AutoencoderFamily(Family):
    """The `autoencoder` family: one AutoencoderKL (module `ae`), one phase; it has no sampler of its own."""

    phases = {"model": ("ae",)}  # optimizer phase -> the modules it trains
    no_sampler_reason = ("an autoencoder is a first stage with no sampler: train a latent model on it "
                         "(latent.autoencoder) and sample that")

    def __init__(self, cfg, sample_shape: tuple[int, ...]):
        super().__init__(cfg, sample_shape)
        a = cfg.autoencoder
        if a.recon not in RECON_LOSSES:
            raise TrilemmaError(f"autoencoder.recon: {a.recon!r} is not one of {', '.join(RECON_LOSSES)}")
        if a.kl_weight < 0 or a.perceptual < 0 or a.scale_images < 1:
            raise TrilemmaError(f"autoencoder.kl_weight and .perceptual must be >= 0 and .scale_images >= 1, got "
                                f"{a.kl_weight}, {a.perceptual}, {a.scale_images}")
        if cfg.latent.autoencoder:
            raise TrilemmaError("latent.autoencoder: an autoencoder is trained on images, not on another one's latents")
        if a.perceptual:
            from ..features import FEATURE_NETS

            if cfg.data.name not in FEATURE_NETS:
                raise TrilemmaError(f"autoencoder.perceptual: {cfg.data.name} has no feature classifier (shipped: "
                                    f"{', '.join(FEATURE_NETS)}); set autoencoder.perceptual: 0")
        self.modules = nn.ModuleDict({"ae": build_autoencoder(a, sample_shape)})
        self.latent_shape = self.modules["ae"].latent_shape
        self.dims = math.prod(sample_shape)
        self._feature_net = None

    def ema_names(self) -> list[str]:
        return ["ae"]

    def _features(self, device):
        """The dataset's feature classifier (frozen), for the perceptual term."""
        if self._feature_net is None:
            from ..features import load_feature_net

            self._feature_net = load_feature_net(self.cfg.data.name).net.requires_grad_(False)
        return self._feature_net.to(device)

    def loss(self, phase: str, modules: nn.ModuleDict, x: torch.Tensor, rng, step: int) -> torch.Tensor:
        """Per-sample loss: reconstruction of x from z ~ q(z | x) (reparameterised), plus the weighted KL."""
        a = self.cfg.autoencoder
        x_hat, mean, logvar = modules["ae"](x, rng.randn((x.shape[0], *self.latent_shape)))
        err = (x_hat - x).abs() if a.recon == "l1" else (x_hat - x).square()
        loss = err.flatten(1).mean(1) + a.kl_weight * gaussian_kl(mean, logvar) / self.dims
        if a.perceptual:
            loss = loss + a.perceptual * stage_distance(self._features(x.device), x_hat, x)
        return loss

    def finalize(self, ema: nn.ModuleDict, raw: nn.ModuleDict, data, device) -> None:
        """Before a checkpoint: measure the latent scale with the EMA encoder on the first `scale_images`
        training images and store it in both copies (the EMA copies buffers from the raw module)."""
        x = data.x[: self.cfg.autoencoder.scale_images]
        scale = measure_latent_scale(ema["ae"], x, device=device)
        for m in (ema["ae"], raw["ae"]):
            m.latent_scale.fill_(scale)

    def checkpoint_meta(self, ema: nn.ModuleDict) -> dict:
        return {"latent_scale": ema["ae"].latent_scale.item(), "latent_shape": list(self.latent_shape)}

    @torch.no_grad()
    def preview(self, ema: nn.ModuleDict, data, path, device) -> None:
        """A grid of training images (odd rows) above their reconstructions from the posterior mean (even rows)."""
        from ..plotting import save_image_grid

        ae = ema["ae"]
        n = 8 * min(4, len(data) // 8)
        x = data.x[: max(n, 1)].to(device)
        rec = ae.decode(ae.encode(x))
        if n:  # rows of 8: data, its reconstruction, data, ...
            x = torch.stack([x.view(-1, 8, *x.shape[1:]), rec.view(-1, 8, *x.shape[1:])], 1)  # (n/8, 2, 8, C, H, W)
            x = x.reshape(-1, *rec.shape[1:])
        else:
            x = torch.cat([x, rec])
        save_image_grid(x.cpu(), path, nrow=8 if n else None, scale=max(1, 64 // x.shape[-1]))


@torch.no_grad()
def evaluate_reconstruction(ae, x: torch.Tensor, dataset: str, batch_size: int = 500, device=None,
                            progress: bool = False, runtime=None) -> dict:
    """Reconstructions g(E[z | x]) of the images x: PSNR per image (mean and 95% interval), the mean squared
    error, and the Frechet distance of the reconstructions to x on the dataset's feature classifier (rFD, as
    LDM's rFID) when the dataset has one. The autoencoder runs under `runtime` (`runtime.Runtime`; None: fp32)."""
    from tqdm.auto import tqdm

    from ..runtime import Runtime, autocast_call

    device = torch.device(device or "cpu")
    recs = []
    for i in tqdm(range(0, len(x), batch_size), desc="reconstruct", disable=not progress, leave=False):
        xb = x[i : i + batch_size].to(device)
        rec = autocast_call(lambda b: ae.decode(ae.encode(b)), runtime or Runtime(), device.type, xb)
        recs.append(rec.float().cpu())
    rec = torch.cat(recs)
    p = psnr(rec, x)
    out = {"images": len(x), "psnr": p.mean().item(),
           "psnr_ci95": 1.96 * p.std().item() / math.sqrt(len(x)) if len(x) > 1 else float("nan"),
           "mse": (rec.double() - x.double()).square().mean().item(), "latent_scale": ae.latent_scale.item(),
           "latent_shape": list(ae.latent_shape)}
    from ..features import FEATURE_NETS

    if dataset in FEATURE_NETS:
        from ..features import extract_features, load_feature_net
        from ..metrics import frechet_distance_from_features

        net = load_feature_net(dataset)
        f_real, _ = extract_features(net, x, device=device)
        f_rec, _ = extract_features(net, rec, device=device)
        out["fd_metric"], out["fd"] = net.metric, float(frechet_distance_from_features(f_rec, f_real))
    return out

"""Backbones: an MLP for 2-D data, diffusers' UNet2DModel for images; DDGAN's generators and
discriminators on the same pieces."""

import math

import torch

from .autoencoder import Autoencoder, build_vae
from .discriminator import ConvDiscriminator, MLPDiscriminator
from .mlp import MLP, FourierInput, timestep_embedding
from .unet import GANUNet, UNet, build_unet

from torch import nn

from ..errors import TrilemmaError

__all__ = [
    "MLP",
    "Autoencoder",
    "build_autoencoder",
    "UNet",
    "GANUNet",
    "MLPDiscriminator",
    "ConvDiscriminator",
    "build_backbone",
    "build_vdm_net",
    "FourierInput",
    "build_generator",
    "latent_generator",
    "build_discriminator",
    "build_unet",
    "timestep_embedding",
]


def _check_image(shape: tuple[int, ...], levels: int, what: str) -> None:
    if len(shape) not in (1, 3):
        raise TrilemmaError(f"no backbone for samples of shape {tuple(shape)}")
    if len(shape) == 3 and shape[1] % 2 ** (levels - 1):
        raise TrilemmaError(f"image size {shape[1]} is not divisible by 2^{levels - 1} ({what} levels)")


def _unet(model_cfg, sample_shape, in_channels: int | None = None, **extra):
    if len(model_cfg.attention) != len(model_cfg.channels):
        raise TrilemmaError(
            f"model.attention has {len(model_cfg.attention)} entries but model.channels has {len(model_cfg.channels)}"
        )
    _check_image(sample_shape, len(model_cfg.channels), "model.channels")
    c, h, _ = sample_shape
    return build_unet(h, in_channels or c, model_cfg.channels, model_cfg.attention, model_cfg.layers_per_block,
                      model_cfg.norm_groups, model_cfg.dropout, out_channels=c, **extra)


def _mlp(model_cfg, sample_shape, latent_dim: int = 0, in_dim: int | None = None) -> MLP:
    if model_cfg.fourier and model_cfg.fourier_period <= 0:
        raise TrilemmaError(f"model.fourier_period must be > 0, got {model_cfg.fourier_period}")
    return MLP(sample_shape[0], model_cfg.hidden, model_cfg.depth, latent_dim=latent_dim, fourier=model_cfg.fourier,
               fourier_period=model_cfg.fourier_period, in_dim=in_dim)


def build_backbone(model_cfg, sample_shape: tuple[int, ...]):
    """An MLP for (D,) samples, a UNet for (C, H, W) images, sized by the model config."""
    _check_image(sample_shape, 1, "model.channels")
    if len(sample_shape) == 1:
        return _mlp(model_cfg, sample_shape)
    return UNet(_unet(model_cfg, sample_shape))


def build_vdm_net(model_cfg, vdm_cfg, sample_shape: tuple[int, ...]):
    """VDM's eps-network: the backbone of `model` on z and, with `vdm.fourier`, its Fourier features
    sin/cos(2^n pi z), n = vdm.fourier_min..vdm.fourier_max (`FourierInput`)."""
    _check_image(sample_shape, 1, "model.channels")
    if not vdm_cfg.fourier:
        return build_backbone(model_cfg, sample_shape)
    if vdm_cfg.fourier_max < vdm_cfg.fourier_min:
        raise TrilemmaError(f"vdm.fourier_max ({vdm_cfg.fourier_max}) is below vdm.fourier_min ({vdm_cfg.fourier_min})")
    width = sample_shape[0] * (1 + 2 * (vdm_cfg.fourier_max - vdm_cfg.fourier_min + 1))
    if len(sample_shape) == 1:
        backbone = _mlp(model_cfg, sample_shape, in_dim=width)
    else:
        backbone = UNet(_unet(model_cfg, sample_shape, in_channels=width))
    return FourierInput(backbone, vdm_cfg.fourier_min, vdm_cfg.fourier_max)


def build_generator(model_cfg, gan_cfg, sample_shape: tuple[int, ...]):
    """DDGAN's G(x_t, timestep, z): the backbone of `model` with a latent of `gan.latent_dim`."""
    _check_image(sample_shape, 1, "model.channels")
    if len(sample_shape) == 1:
        return _mlp(model_cfg, sample_shape, gan_cfg.latent_dim)
    unet = _unet(model_cfg, sample_shape, class_embed_type="identity", resnet_time_scale_shift="scale_shift")
    return GANUNet(unet, gan_cfg.latent_dim, gan_cfg.mapping_layers, tanh=gan_cfg.tanh)


def _zero_mapping(latent_dim: int, width: int, layers: int) -> nn.Sequential:
    """latent (B, latent_dim) -> (B, width) through `layers` Linear layers (SiLU between); the last starts at zero."""
    mods, w = [], latent_dim
    for _ in range(layers):
        mods += [nn.Linear(w, width), nn.SiLU()]
        w = width
    mapping = nn.Sequential(*mods[:-1])
    nn.init.zeros_(mapping[-1].weight)
    nn.init.zeros_(mapping[-1].bias)
    return mapping


def latent_generator(net: nn.Module, latent_dim: int, mapping_layers: int, fourier: int = 0,
                     fourier_period: float = 8.0) -> nn.Module:
    """A generator G(x, timestep, latent) made from a trained backbone net(x, timestep) (an MLP, a UNet, either
    under `FourierInput`): the latent goes through a mapping MLP into the network's time embedding (the MLP's
    `mapping`; UNet2DModel's class embedding, as `GANUNet`), and the mapping's last layer starts at zero, so at
    first G(x, t, z) = net(x, t) for every z (a diffusion GAN started from the diffusion model, as in UFOGen,
    Xu et al. 2024). The backbone's modules and weights are reused: an MLP or `FourierInput` is changed in place,
    a UNet's UNet2DModel gets an identity class embedding (the mapped latent is added to its time embedding, which
    its ResNet blocks use as they were trained: no AdaGN is switched on) inside a `GANUNet` with a linear output.
    `fourier` > 0 (an MLP on raw x only) also widens the MLP's input layer to x's `fourier` Fourier bands of lowest
    period `fourier_period`, their weights zero, so G is still net at first: a few-step generator's last step is a
    staircase in x_t, which an MLP on raw x draws as smooth ramps between the modes (see `MLP`)."""
    if mapping_layers < 1:
        raise TrilemmaError(f"gan.mapping_layers must be >= 1 for a generator started from a teacher, got {mapping_layers}")
    if fourier and not (isinstance(net, MLP) and net.fourier == 0):
        raise TrilemmaError(f"gan.g_fourier: Fourier input bands are added to a 2-D MLP on raw x, not to a "
                            f"{type(net).__name__} backbone{' that has them' if isinstance(net, MLP) else ''}")
    if isinstance(net, FourierInput):
        net.backbone = latent_generator(net.backbone, latent_dim, mapping_layers)
        net.latent_dim = latent_dim
        return net
    if isinstance(net, MLP):
        net.latent_dim = latent_dim
        net.mapping = _zero_mapping(latent_dim, net.time[-1].out_features, mapping_layers)
        if fourier:
            _widen_to_fourier(net, fourier, fourier_period)
        return net
    if isinstance(net, UNet):
        unet = net.unet
        unet.class_embedding = nn.Identity()  # the mapped latent is added to the time embedding
        gen = GANUNet(unet, latent_dim, mapping_layers, tanh=False)
        gen.mapping = _zero_mapping(latent_dim, unet.config.block_out_channels[0] * 4, mapping_layers)
        return gen
    raise TrilemmaError(f"no latent input for a {type(net).__name__} backbone")


def _widen_to_fourier(net: MLP, fourier: int, fourier_period: float) -> None:
    """net.inp, Linear(D, hidden) on x, becomes Linear(D (1 + 2 fourier), hidden) on `fourier_features(x)`, whose
    first D columns are x: the old weights there, zeros on the sin and cos columns (the bias unchanged)."""
    if fourier_period <= 0:
        raise TrilemmaError(f"gan.g_fourier_period must be > 0, got {fourier_period}")
    old = net.inp
    wide = nn.Linear(old.in_features * (1 + 2 * fourier), old.out_features, device=old.weight.device,
                     dtype=old.weight.dtype)
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[:, : old.in_features] = old.weight
        wide.bias.copy_(old.bias)
    net.inp, net.fourier, net.fourier_base = wide, fourier, 2 * math.pi / fourier_period


def build_discriminator(gan_cfg, sample_shape: tuple[int, ...]):
    """DDGAN's D(x_{t-1}, x_t, timestep): an MLP for (D,) samples, a conv net for images."""
    _check_image(sample_shape, len(gan_cfg.d_channels), "gan.d_channels")
    if len(sample_shape) == 1:
        if gan_cfg.d_fourier_period <= 0:
            raise TrilemmaError(f"gan.d_fourier_period must be > 0, got {gan_cfg.d_fourier_period}")
        if gan_cfg.d_fourier_anneal < 0 or (gan_cfg.d_fourier_anneal and gan_cfg.d_fourier == 0):
            raise TrilemmaError(f"gan.d_fourier_anneal must be >= 0 and needs gan.d_fourier > 0, got "
                                f"{gan_cfg.d_fourier_anneal} with d_fourier {gan_cfg.d_fourier}")
        if not gan_cfg.d_raw_input and gan_cfg.d_fourier == 0:
            raise TrilemmaError("gan.d_raw_input: false needs gan.d_fourier > 0 (the discriminator would see nothing)")
        return MLPDiscriminator(sample_shape[0], gan_cfg.d_hidden, gan_cfg.d_depth, fourier=gan_cfg.d_fourier,
                                group=gan_cfg.d_group, fourier_period=gan_cfg.d_fourier_period,
                                raw_input=gan_cfg.d_raw_input)
    if gan_cfg.d_fourier_anneal:
        raise TrilemmaError("gan.d_fourier_anneal applies to the 2-D discriminator's Fourier features; "
                            "the image discriminator has none")
    return ConvDiscriminator(sample_shape[0], tuple(gan_cfg.d_channels), group=gan_cfg.d_group)


def build_autoencoder(ae_cfg, data_shape: tuple[int, ...]) -> Autoencoder:
    """The first stage of latent diffusion for images of `data_shape`, sized by the autoencoder config."""
    if len(data_shape) != 3:
        raise TrilemmaError(f"family autoencoder needs images, not samples of shape {tuple(data_shape)}")
    if ae_cfg.pad < 0:
        raise TrilemmaError(f"autoencoder.pad must be >= 0, got {ae_cfg.pad}")
    if ae_cfg.norm_groups < 1 or ae_cfg.layers_per_block < 1:
        raise TrilemmaError(f"autoencoder.norm_groups and .layers_per_block must be >= 1, got {ae_cfg.norm_groups}, "
                            f"{ae_cfg.layers_per_block}")
    if not ae_cfg.channels or any(c < 1 or c % ae_cfg.norm_groups for c in ae_cfg.channels):
        raise TrilemmaError(f"autoencoder.channels {ae_cfg.channels} must be non-empty positive multiples of "
                            f"autoencoder.norm_groups ({ae_cfg.norm_groups})")
    if ae_cfg.latent_channels < 1:
        raise TrilemmaError(f"autoencoder.latent_channels must be >= 1, got {ae_cfg.latent_channels}")
    c, h, w = data_shape
    f = 2 ** (len(ae_cfg.channels) - 1)
    if (h + 2 * ae_cfg.pad) % f or (w + 2 * ae_cfg.pad) % f:
        raise TrilemmaError(f"autoencoder: {h}x{w} images padded by {ae_cfg.pad} are not divisible by the downsampling "
                            f"factor {f} (len(autoencoder.channels) = {len(ae_cfg.channels)}); change autoencoder.pad")
    vae = build_vae(c, h + 2 * ae_cfg.pad, ae_cfg.channels, ae_cfg.layers_per_block, ae_cfg.latent_channels,
                    ae_cfg.norm_groups, ae_cfg.mid_attention)
    return Autoencoder(vae, ae_cfg.pad, data_shape)

"""Backbones: an MLP for 2-D data, diffusers' UNet2DModel for images."""

from .mlp import MLP, timestep_embedding
from .unet import UNet, build_unet

from ..errors import TrilemmaError

__all__ = ["MLP", "UNet", "build_backbone", "build_unet", "timestep_embedding"]


def build_backbone(model_cfg, sample_shape: tuple[int, ...]):
    """An MLP for (D,) samples, a UNet for (C, H, W) images, sized by the model config."""
    if len(sample_shape) == 1:
        return MLP(sample_shape[0], model_cfg.hidden, model_cfg.depth)
    if len(sample_shape) != 3:
        raise TrilemmaError(f"no backbone for samples of shape {tuple(sample_shape)}")
    c, h, w = sample_shape
    if len(model_cfg.attention) != len(model_cfg.channels):
        raise TrilemmaError(
            f"model.attention has {len(model_cfg.attention)} entries but model.channels has {len(model_cfg.channels)}"
        )
    if h % 2 ** (len(model_cfg.channels) - 1):
        raise TrilemmaError(f"image size {h} is not divisible by 2^{len(model_cfg.channels) - 1} (model.channels levels)")
    unet = build_unet(h, c, model_cfg.channels, model_cfg.attention, model_cfg.layers_per_block,
                      model_cfg.norm_groups, model_cfg.dropout)
    return UNet(unet)

import os

import pytest
import torch

os.environ.setdefault("TQDM_DISABLE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tiny_unet():
    """A small diffusers UNet2DModel (1 x 8 x 8), deterministic weights, non-trivial outputs."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1, norm_num_groups=8,
    )
    return unet.eval()


@pytest.fixture(autouse=True)
def _auto_precision_is_fp32(request, monkeypatch):
    """Precision `auto` (every command's default) is bf16 on a CPU with native bfloat16 and fp32 on one without, so
    the same test would compute differently on different CI machines. Tests see fp32 for `auto`, by construction;
    a test marked `auto_precision` sees the real choice (tests/test_runtime.py)."""
    if request.node.get_closest_marker("auto_precision") is None:
        from trilemma import runtime

        monkeypatch.setattr(runtime, "auto_precision", lambda device, bound=False: "fp32")

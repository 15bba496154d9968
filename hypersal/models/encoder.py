"""The main network's encoder: torchvision's MobileNetV2 feature blocks, optionally cut short."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

from hypersal.config import options
from hypersal.errors import UserError
from hypersal.config.options import STRIDES

# Output channels and total stride after each of MobileNetV2's 19 feature blocks.
CHANNELS = (32, 16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320, 1280)
N_BLOCKS = len(CHANNELS)


class Encoder(nn.Module):
    """`blocks` = mobilenet_v2().features[:cutoff]; image (B, 3, H, W) -> (B, C, H/s, W/s)."""

    def __init__(self, cutoff: int = N_BLOCKS, weights: str | None = None,
                 weights_path: str | None = None):
        super().__init__()
        options.enforce_range("model.encoder.cutoff", cutoff)
        net = mobilenet_v2(weights=None)
        if weights is not None or weights_path is not None:
            # strict=False: the classifier may be absent from a file; _check_state has made sure
            # every feature block is there.
            net.load_state_dict(load_weights(weights, weights_path), strict=False)
        self.blocks = net.features[:cutoff]
        self.cutoff = cutoff
        self.out_channels = CHANNELS[cutoff - 1]
        self.stride = STRIDES[cutoff - 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)

    def forward_with_skip(self, x: torch.Tensor, skip: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(the last block's output, the output of the first `skip` blocks): the decoder's skip."""
        low = self.blocks[:skip](x)
        return self.blocks[skip:](low), low


def load_weights(weights: str | None, weights_path: str | None) -> dict:
    """A full MobileNetV2 state dict: torchvision's ImageNet weights or a local .pth file.

    ImageNet weights are read from torch's cache only: compute nodes often have no internet,
    and a download attempt there hangs instead of failing.
    """
    if weights_path is not None:
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise UserError("weights file not found", file=weights_path, key="model.encoder.weights_path",
                            fix="check the path") from None
        except Exception as e:
            raise UserError(f"cannot load the weights file: {e}", file=weights_path,
                            key="model.encoder.weights_path",
                            fix="save it with torch.save(mobilenet_v2().state_dict(), path)") from None
        return _check_state(state.get("state_dict", state) if isinstance(state, dict) else state,
                            weights_path)
    if weights != "imagenet":
        raise UserError(f"unknown encoder weights '{weights}'", key="model.encoder.weights",
                        fix="use imagenet, or null and set weights_path")
    enum = MobileNet_V2_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
    if not cached.is_file():
        raise UserError(f"the ImageNet weights are not in torch's cache ({cached})",
                        key="model.encoder.weights",
                        fix="on a machine with internet run: python -c \"from torchvision.models "
                            "import mobilenet_v2; mobilenet_v2(weights='IMAGENET1K_V1')\" and copy "
                            f"the file to {cached}, or set weights_path to a .pth file")
    try:
        return enum.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # torch.load's errors on a truncated file vary (EOF, unpickling, zip)
        raise UserError(f"the cached ImageNet weights are damaged: {e}", file=cached,
                        key="model.encoder.weights", fix="delete the file and download it again") from None


def _check_state(state, path) -> dict:
    reference = mobilenet_v2(weights=None).state_dict()
    needed = {k for k in reference if k.startswith("features.")}
    state = state if isinstance(state, dict) else {}
    missing, unexpected = sorted(needed - set(state)), sorted(set(state) - set(reference))
    if missing or unexpected:
        example = (missing or unexpected)[:3]
        raise UserError(f"not a MobileNetV2 state dict ({'missing' if missing else 'unexpected'} "
                        f"keys, e.g. {', '.join(example)})",
                        file=path, key="model.encoder.weights_path",
                        fix="save it with torch.save(mobilenet_v2().state_dict(), path)")
    return state

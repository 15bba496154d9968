"""Decoders: encoder features (B, C, h, w) -> saliency logits (B, 1, H, W) at the image size.

| name      | what                                                                  |
|-----------|-----------------------------------------------------------------------|
| light     | (default) predicts at 2/stride of the image, upsamples bilinearly;    |
|           | with `skip` N, adds the first N encoder blocks' output and predicts   |
|           | at their stride (e.g. N = 4: a quarter of the image's size)           |
| kdsalbox  | the seed's decoder: 7 conv3x3+BN+ReLU blocks, five x2 upsamplings     |
| inception | QUICKSAL-style: dilated inception blocks, two x2 upsamplings          |

Saliency maps are smooth: predicting at low resolution and upsampling loses little, and the
seed's full-resolution 3x3 convolutions cost ~60x the encoder (~114 GFLOP per 480x640 image
forward; measured on an H100: 80 img/s for the seed's setup, ~1,000 img/s for a light decoder).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hypersal.registry import Registry

DECODERS: Registry[type] = Registry("decoder")


def conv_bn_relu(c_in: int, c_out: int, k: int = 3, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=dilation * (k // 2), dilation=dilation,
                                   bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def to_size(x: torch.Tensor, size) -> torch.Tensor:
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(
        x, size=tuple(size), mode="bilinear", align_corners=False)


@DECODERS.register("light")
class LightDecoder(nn.Module):
    SKIPS = True     # takes a higher-resolution encoder output (model.decoder.skip)

    def __init__(self, in_channels: int, width: int | None = None, skip_channels: int | None = None):
        super().__init__()
        width = width or 32
        self.reduce = conv_bn_relu(in_channels, width, 1)
        self.low = conv_bn_relu(width, width)
        self.high = conv_bn_relu(width, width)
        if skip_channels:
            self.lateral = conv_bn_relu(skip_channels, width, 1)
            self.fuse = conv_bn_relu(width, width)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, features: torch.Tensor, size, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.low(self.reduce(features))      # (B, w, h, w')
        x = self.high(up2(x))                    # (B, w, 2h, 2w')
        if skip is not None:                     # (B, w, H/s, W/s): the skip's finer grid
            x = self.fuse(to_size(x, skip.shape[-2:]) + self.lateral(skip))
        return to_size(self.head(x), size)       # (B, 1, H, W)


@DECODERS.register("kdsalbox")
class KDSalBoxDecoder(nn.Module):
    """The seed's decoder; `width` (default 64) is the channel count of its last blocks."""
    MULTIPLIERS = (8, 4, 4, 2, 2, 1, 1)
    UPSAMPLE_AFTER = (0, 1, 2, 3, 4)

    def __init__(self, in_channels: int, width: int | None = None):
        super().__init__()
        width = width or 64
        chans = [in_channels] + [m * width for m in self.MULTIPLIERS]
        self.blocks = nn.ModuleList(conv_bn_relu(a, b) for a, b in zip(chans, chans[1:]))
        self.head = nn.Conv2d(chans[-1], 1, 1)

    def forward(self, features: torch.Tensor, size) -> torch.Tensor:
        x = features
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.UPSAMPLE_AFTER:
                x = up2(x)
        return to_size(self.head(x), size)


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1, 3x3 with dilation 1, 2, 4) concatenated."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        quarter = c_out // 4
        self.branches = nn.ModuleList([conv_bn_relu(c_in, quarter, 1)] +
                                      [conv_bn_relu(c_in, quarter, 3, d) for d in (1, 2, 4)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


@DECODERS.register("inception")
class InceptionDecoder(nn.Module):
    def __init__(self, in_channels: int, width: int | None = None):
        super().__init__()
        width = width or 64
        self.reduce = conv_bn_relu(in_channels, width, 1)
        self.block1 = InceptionBlock(width, width)
        self.block2 = InceptionBlock(width, width)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, features: torch.Tensor, size) -> torch.Tensor:
        x = up2(self.block1(self.reduce(features)))
        x = up2(self.block2(x))
        return to_size(self.head(x), size)

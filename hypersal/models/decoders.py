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

import math

import torch
import torch.nn.functional as F
from torch import nn

from hypersal.config import choices


DECODERS = choices.DECODERS   # the names and where each lives: hypersal/config/choices.py


def conv_bn_relu(c_in: int, c_out: int, k: int = 3, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=dilation * (k // 2), dilation=dilation,
                                   bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def to_size(x: torch.Tensor, size) -> torch.Tensor:
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(
        x, size=tuple(size), mode="bilinear", align_corners=False)


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


class SaliencyOutput(nn.Module):
    """Saliency-shaped parameters on the decoder's logits (model.decoder.prior: K > 0):

        out = gain * blur_sigma(logits) + bias + sum_k weight_k * Gaussian_k(x, y)

    K learned Gaussian maps (centre and widths in image-relative units, so they fit any size),
    an output blur (sigma a learned fraction of the image's side), a gain and a bias. With the
    hypernetwork generating the decoder, every one of them is generated per task: a task's
    centre prior, smoothness and contrast are a few numbers the few-shot study can adapt."""

    MAX_BLUR = 0.1     # sigma at most 10% of the side

    def __init__(self, priors: int):
        super().__init__()
        side = int(math.ceil(math.sqrt(priors)))
        grid = torch.linspace(-0.25, 0.25, side) if side > 1 else torch.zeros(1)
        centres = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)[:priors]
        self.prior_weight = nn.Parameter(torch.zeros(priors))
        self.prior_centre = nn.Parameter(centres.clone())                     # (K, 2): y, x in [-0.5, 0.5]
        self.prior_log_width = nn.Parameter(torch.full((priors, 2), math.log(0.25)))
        self.gain = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))
        self.blur_logit = nn.Parameter(torch.tensor([-3.0]))                 # sigmoid(-3) * 10% ~ 0.5%

    def priors(self, h: int, w: int) -> torch.Tensor:
        """(1, 1, h, w): the weighted sum of the Gaussian maps."""
        ys = torch.linspace(-0.5, 0.5, h, device=self.gain.device, dtype=self.gain.dtype)
        xs = torch.linspace(-0.5, 0.5, w, device=self.gain.device, dtype=self.gain.dtype)
        width = self.prior_log_width.exp()
        gy = ((ys[None, :] - self.prior_centre[:, :1]) / width[:, :1]) ** 2          # (K, h)
        gx = ((xs[None, :] - self.prior_centre[:, 1:]) / width[:, 1:]) ** 2          # (K, w)
        maps = torch.exp(-0.5 * (gy[:, :, None] + gx[:, None, :]))                   # (K, h, w)
        return (self.prior_weight[:, None, None] * maps).sum(0)[None, None]

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        """A separable Gaussian blur whose sigma is learned (differentiable), reflect-padded."""
        h, w = x.shape[-2:]
        sigma = torch.sigmoid(self.blur_logit) * self.MAX_BLUR * max(h, w)          # (1,)
        radius = max(1, int(math.ceil(3 * self.MAX_BLUR * max(h, w))))
        radius = min(radius, (min(h, w) - 1))
        if radius < 1:
            return x
        taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-0.5 * (taps / sigma.clamp_min(0.2)) ** 2)   # 0.2 px: the identity, nearly
        kernel = kernel / kernel.sum()
        x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
        x = F.conv2d(x, kernel.view(1, 1, 1, -1))
        x = F.pad(x, (0, 0, radius, radius), mode="reflect")
        return F.conv2d(x, kernel.view(1, 1, -1, 1))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        h, w = logits.shape[-2:]
        return self.gain * self.blur(logits) + self.bias + self.priors(h, w)


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

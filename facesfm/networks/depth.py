"""Depth network: a U-Net style encoder-decoder with skip connections and multi-scale output.

Encoder: a stride-1 stem then five stages of residual blocks down to stride 32. Decoder: at
each level, upsample x2 (nearest), concatenate the encoder skip of that resolution, two 3x3
convs. Depth heads at scales 1, 1/2, 1/4, 1/8 (``num_scales``) map to camera-frame depth in
millimetres through a sigmoid into ``[min_depth_mm, max_depth_mm]``:
``D = dmin + (dmax - dmin) * sigmoid(x)`` (the face sits ~350..700 mm from the camera in our
renders; the default range leaves margin on both sides). At initialisation the heads output
~0, i.e. the middle of the range. ~1.74M parameters (7 MB float32) with the defaults;
~0.9 GMAC per 192x192 image forward.

The paper's encoder ends in a fully connected layer; we leave it out: it would tie the network
to one input size and, at 384x384, cost more parameters than the whole network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from facesfm.networks._common import ConvBlock, ResBlock, check_image, kaiming_init

__all__ = ["DepthNet", "DepthNetConfig"]


@dataclass(frozen=True)
class DepthNetConfig:
    """Depth network settings.

    channels:      encoder widths at strides 1, 2, 4, 8, 16, 32 (six entries).
    num_scales:    depth outputs returned, finest first (1..4: scales 1, 1/2, 1/4, 1/8).
    min_depth_mm, max_depth_mm: output range of the sigmoid.
    in_channels:   3 (RGB).
    """

    channels: tuple[int, ...] = (16, 24, 32, 64, 96, 160)
    num_scales: int = 4
    min_depth_mm: float = 200.0
    max_depth_mm: float = 900.0
    in_channels: int = 3

    def __post_init__(self):
        if len(self.channels) != 6:
            raise ValueError(f"DepthNetConfig.channels needs 6 entries, got {self.channels}")
        if not 1 <= self.num_scales <= 4:
            raise ValueError(f"DepthNetConfig.num_scales must be 1..4, got {self.num_scales}")
        if not 0 < self.min_depth_mm < self.max_depth_mm:
            raise ValueError(
                f"DepthNetConfig: need 0 < min_depth_mm < max_depth_mm, got "
                f"{self.min_depth_mm}, {self.max_depth_mm}"
            )


class DepthNet(nn.Module):
    """RGB (B, 3, H, W) in [0, 1] -> list of depth maps [(B, 1, H / 2^s, W / 2^s)], finest
    first, in mm. H and W must be multiples of 32."""

    stride = 32

    def __init__(self, cfg: DepthNetConfig = DepthNetConfig()):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.stem = ConvBlock(cfg.in_channels, c[0])
        self.enc = nn.ModuleList(
            [
                nn.Sequential(ResBlock(c[i], c[i + 1], stride=2), ResBlock(c[i + 1], c[i + 1]))
                if i >= 3
                else ResBlock(c[i], c[i + 1], stride=2)
                for i in range(5)
            ]
        )
        # decoder level k produces stride 2^k features from the level below + skip c[k]
        self.dec = nn.ModuleList()
        for k in range(4, -1, -1):
            self.dec.append(nn.Sequential(ConvBlock(c[k + 1] + c[k], c[k]), ConvBlock(c[k], c[k])))
        self.heads = nn.ModuleList(
            [nn.Conv2d(c[s], 1, 3, padding=1) for s in range(cfg.num_scales)]
        )
        kaiming_init(self)
        for h in self.heads:
            nn.init.normal_(h.weight, std=1e-3)
            nn.init.zeros_(h.bias)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        check_image(image, self.cfg.in_channels, self.stride, "DepthNet")
        feats = [self.stem(image)]
        for stage in self.enc:
            feats.append(stage(feats[-1]))
        x = feats[-1]
        outs: dict[int, torch.Tensor] = {}
        for dec, k in zip(self.dec, range(4, -1, -1)):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = dec(torch.cat([x, feats[k]], dim=1))
            if k < self.cfg.num_scales:
                outs[k] = self.heads[k](x)
        lo, hi = self.cfg.min_depth_mm, self.cfg.max_depth_mm
        return [lo + (hi - lo) * torch.sigmoid(outs[s]) for s in range(self.cfg.num_scales)]

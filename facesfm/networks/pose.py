"""Relative pose network: a (target, source) image pair -> 6-DoF ``src_T_tgt``.

A strided conv encoder (SfMLearner style, stride 32) over the concatenation of target, source
and (``difference_input``) their difference, GroupNorm after each convolution (``use_norm``),
global average pooling and a 1x1 head to 6 numbers: an axis-angle rotation in
units of ``rotation_unit_rad`` (0.1 rad) and a translation in units of ``translation_unit_mm``
(10 mm), so the head works with O(1) numbers for the motions of a turning head (up to ~0.5 rad
and ~250 mm between frames). The head's weights start ``init_std`` (0.01) small, so the
predicted motion starts near identity (within a degree and a few mm). (SfMLearner instead multiplies
the output by 0.01 for good, which also slows the head's learning by 100x.)

``pivot_depth_mm`` optionally expresses the rotation about the point (0, 0, pivot) of the target
camera (the head centre for a camera looking at a head): ``X_src = R (X_tgt - c) + c + t``.
A head turning in front of a fixed camera is then a pure rotation; 0 gives the plain
``X_src = R X_tgt + t`` parameterisation of the paper. ~0.65M parameters with the defaults.

Why the norm and the difference: without them this encoder did not learn the motion on faces
at all in the steps a CPU run affords. Trained for 600 steps of 16 pairs (12 degrees apart on
average, directions varied) on the ground-truth motions as a plain regression, the plain encoder
still predicted one constant motion for every pair (12.0 degrees of error, the motion itself);
with GroupNorm it reached 5.4 degrees, with GroupNorm and the difference channels 3.0 (2.2
after 1500 steps). A turning head moves only a small part of the image by a few pixels; the
difference image puts that change in the first layer's input instead of leaving the network
to find it. ``use_norm=False, difference_input=False`` is the plain encoder (and what
checkpoints written before these options hold).

For a sequence, ``cam_T_world`` relative to frame 0 is ``PoseNet(frame_0, frame_k).src_T_tgt``
(``k_T_0``), which :func:`facesfm.losses.landmark_ba_loss` accepts directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from facesfm.geometry.se3 import so3_exp
from facesfm.networks._common import ConvBlock, check_image, kaiming_init

__all__ = [
    "PoseNet",
    "PoseNetConfig",
    "PoseOutput",
    "axis_angle_to_matrix",
    "pose_vector_to_matrix",
]


@dataclass(frozen=True)
class PoseNetConfig:
    """Pose network settings.

    channels:            widths of the five stride-2 stages.
    rotation_unit_rad:   radians per unit of the rotation output.
    translation_unit_mm: millimetres per unit of the translation output.
    init_std:            std of the head's initial weights (small: motion starts near 0).
    pivot_depth_mm:      rotation pivot on the target camera's optical axis (0 = camera centre).
    in_channels:         channels per image (3, RGB); the network sees 2x that, 3x with
                         ``difference_input``.
    use_norm:            GroupNorm after each convolution of the encoder.
    difference_input:    also feed ``source - target`` to the encoder.
    """

    channels: tuple[int, ...] = (16, 32, 64, 128, 192)
    rotation_unit_rad: float = 0.1
    translation_unit_mm: float = 10.0
    init_std: float = 0.01
    pivot_depth_mm: float = 0.0
    in_channels: int = 3
    use_norm: bool = True
    difference_input: bool = True

    def __post_init__(self):
        if len(self.channels) != 5:
            raise ValueError(f"PoseNetConfig.channels needs 5 entries, got {self.channels}")


@dataclass
class PoseOutput:
    """Relative motion for a batch of pairs.

    vector:    (B, 6): axis-angle (rad) and translation (mm) as used in ``src_T_tgt``
               (translation after the pivot correction, i.e. ``src_T_tgt[:, :3, 3]``).
    src_T_tgt: (B, 4, 4): ``X_src = R X_tgt + t``.
    """

    vector: torch.Tensor
    src_T_tgt: torch.Tensor


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rodrigues: axis-angle (..., 3) radians -> rotation matrices (..., 3, 3).

    The same map as the BA layer's :func:`facesfm.geometry.se3.so3_exp` (one implementation,
    differentiable at 0), so network poses and solver poses agree bit for bit.
    """
    if rotvec.shape[-1] != 3:
        raise ValueError(f"axis_angle_to_matrix: expected (..., 3), got {tuple(rotvec.shape)}")
    return so3_exp(rotvec)


def pose_vector_to_matrix(vec: torch.Tensor) -> torch.Tensor:
    """(..., 6) [axis-angle (rad), translation] -> (..., 4, 4) rigid transforms."""
    if vec.shape[-1] != 6:
        raise ValueError(f"pose_vector_to_matrix: expected (..., 6), got {tuple(vec.shape)}")
    R = axis_angle_to_matrix(vec[..., :3])
    top = torch.cat([R, vec[..., 3:, None]], dim=-1)
    bottom = torch.zeros(*vec.shape[:-1], 1, 4, device=vec.device, dtype=vec.dtype)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


class PoseNet(nn.Module):
    """(target, source) images (B, 3, H, W) each, in [0, 1] -> :class:`PoseOutput`
    ``src_T_tgt``. H and W must be multiples of 32."""

    stride = 32

    def __init__(self, cfg: PoseNetConfig = PoseNetConfig()):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        n = cfg.use_norm
        layers: list[nn.Module] = [ConvBlock(self.input_channels, c[0], stride=2, use_norm=n)]
        for i in range(1, 5):
            layers.append(ConvBlock(c[i - 1], c[i], stride=2, use_norm=n))
        layers.append(ConvBlock(c[4], c[4], use_norm=n))
        self.encoder = nn.Sequential(*layers)
        self.head = nn.Conv2d(c[4], 6, 1)
        kaiming_init(self)
        nn.init.normal_(self.head.weight, std=cfg.init_std)
        nn.init.zeros_(self.head.bias)

    @property
    def input_channels(self) -> int:
        return (3 if self.cfg.difference_input else 2) * self.cfg.in_channels

    def forward(self, tgt: torch.Tensor, src: torch.Tensor) -> PoseOutput:
        if tgt.shape != src.shape:
            raise ValueError(f"PoseNet: tgt {tuple(tgt.shape)} and src {tuple(src.shape)} differ")
        xs = [tgt, src, src - tgt] if self.cfg.difference_input else [tgt, src]
        x = torch.cat(xs, dim=1)
        check_image(x, self.input_channels, self.stride, "PoseNet")
        raw = self.head(self.encoder(x)).mean((2, 3))  # (B, 6)
        rot = raw[:, :3] * self.cfg.rotation_unit_rad
        t = raw[:, 3:] * self.cfg.translation_unit_mm
        R = axis_angle_to_matrix(rot)
        if self.cfg.pivot_depth_mm:
            c = torch.zeros_like(t)
            c[:, 2] = self.cfg.pivot_depth_mm
            t = t + c - (R @ c[..., None])[..., 0]
        vec = torch.cat([rot, t], dim=-1)
        return PoseOutput(vector=vec, src_T_tgt=pose_vector_to_matrix(vec))

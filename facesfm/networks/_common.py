"""Shared pieces of the networks: input checks, initialisation, small building blocks."""

from __future__ import annotations

import torch
from torch import nn

from facesfm.errors import InputError

# ITU-R BT.601 luma, used when a grayscale network is given RGB
_LUMA = (0.299, 0.587, 0.114)


def check_image(x: torch.Tensor, channels: int, stride: int, who: str) -> None:
    """Raise a clear error unless ``x`` is (B, channels, H, W) with H, W multiples of stride."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(
            f"{who}: expected a (B, {channels}, H, W) image batch, got {tuple(x.shape)}"
        )
    H, W = x.shape[-2:]
    if H % stride or W % stride or H < stride or W < stride:
        raise InputError(
            f"{who}: image size {H}x{W} must be a positive multiple of the network stride "
            f"{stride} in both dimensions (e.g. {max(stride, H // stride * stride)}x"
            f"{max(stride, W // stride * stride)})"
        )


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) luma; (B, 1, H, W) passes through."""
    if x.dim() == 4 and x.shape[1] == 3:
        w = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).reshape(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    return x


def kaiming_init(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) convolutions and linears, zero biases, unit norms."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def norm(channels: int) -> nn.GroupNorm:
    """GroupNorm: batch-size independent (training runs with batches of 2 to 8)."""
    groups = 8 if channels % 8 == 0 else 1
    return nn.GroupNorm(groups, channels)


class ConvBlock(nn.Sequential):
    """3x3 conv (optionally strided) + GroupNorm + ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, use_norm: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not use_norm)
        ]
        if use_norm:
            layers.append(norm(cout))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Basic residual block (two 3x3 convs, GroupNorm); strided or widening blocks project."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.n1 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.n2 = norm(cout)
        self.skip = (
            None
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), norm(cout))
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.n1(self.conv1(x)))
        y = self.n2(self.conv2(y))
        s = x if self.skip is None else self.skip(x)
        return self.relu(y + s)

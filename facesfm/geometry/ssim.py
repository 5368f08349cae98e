"""Per-pixel structural similarity (SSIM, Wang et al. 2004) for image batches.

Two windows:

* ``"box3"``: a 3x3 mean filter with reflection padding, as monodepth/monodepth2 use for
  self-supervised depth (cheap, very local).
* ``"gauss11"``: the classic 11x11 Gaussian window with sigma 1.5 (reflection padding).

Both keep the image size, so the map can be masked pixel by pixel.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["SSIMWindow", "ssim"]

SSIMWindow = Literal["box3", "gauss11"]


def _window(kind: str, channels: int, device, dtype) -> torch.Tensor:
    if kind == "box3":
        k = torch.full((3, 3), 1.0 / 9.0, device=device, dtype=dtype)
    elif kind == "gauss11":
        x = torch.arange(11, device=device, dtype=dtype) - 5.0
        g = torch.exp(-(x**2) / (2.0 * 1.5**2))
        g = g / g.sum()
        k = g[:, None] * g[None, :]
    else:
        raise ValueError(f"ssim: window must be 'box3' or 'gauss11', got {kind!r}")
    return k.expand(channels, 1, *k.shape).contiguous()


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    window: SSIMWindow = "box3",
    data_range: float = 1.0,
) -> torch.Tensor:
    """SSIM map between two image batches.

    x, y: (B, C, H, W) in [0, data_range]. Returns (B, C, H, W): 1 where the local patches are
    identical, lower otherwise (it can go negative for anti-correlated patches).
    C1 = (0.01 L)^2 and C2 = (0.03 L)^2 with L = ``data_range``.
    """
    if x.dim() != 4 or x.shape != y.shape:
        raise ValueError(
            f"ssim: x and y must be equal (B, C, H, W) shapes, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    C = x.shape[1]
    w = _window(window, C, x.device, x.dtype)
    pad = w.shape[-1] // 2
    if min(x.shape[-2:]) <= pad:
        raise ValueError(f"ssim: image {tuple(x.shape[-2:])} too small for window {window!r}")

    def filt(t):
        return F.conv2d(F.pad(t, (pad, pad, pad, pad), mode="reflect"), w, groups=C)

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_x = filt(x)
    mu_y = filt(y)
    sxx = filt(x * x) - mu_x**2
    syy = filt(y * y) - mu_y**2
    sxy = filt(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return num / den

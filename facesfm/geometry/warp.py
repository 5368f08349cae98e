"""Inverse warping of images by depth and relative pose (view synthesis), in torch.

Conventions are those of :mod:`facesfm.geometry.camera`: OpenCV camera axes, pixel centre of
(row r, col c) at ``uv = (c, r)``, ``X_src = R @ X_tgt + t`` for ``src_T_tgt``.

Sampling: a pixel position ``u`` in an image of width ``W`` maps to the normalised
``grid_sample`` coordinate ``2 * u / (W - 1) - 1`` with ``align_corners=True``, so integer
``uv`` hit pixel centres exactly (same for ``v`` and ``H``).

Inverse warping (SfMLearner / monodepth): every *target* pixel is lifted with the target depth,
moved into the source camera and projected; the source image is bilinearly sampled there. The
result lives on the target pixel grid and reconstructs the target image from the source one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from facesfm.geometry.camera import backproject, project, transform

__all__ = [
    "WarpResult",
    "affine_resample",
    "affine_resample_views",
    "backproject_depth",
    "crop_affine",
    "inside_warped_mask",
    "inverse_warp",
    "pixel_grid",
    "resize_affine",
    "sample_image",
    "uv_to_grid",
]


def pixel_grid(height: int, width: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Pixel-centre coordinates ``uv`` of an ``height x width`` image, shape (H, W, 2).

    ``grid[r, c] = (c, r)``.
    """
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([u, v], dim=-1)


def uv_to_grid(uv: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel coordinates (..., 2) -> ``grid_sample`` coordinates for ``align_corners=True``."""
    if uv.shape[-1] != 2:
        raise ValueError(f"uv_to_grid: uv must end in 2, got {tuple(uv.shape)}")
    # max(.,1) keeps a 1-pixel-wide image finite (its only centre maps to -1)
    sx = 2.0 / max(width - 1, 1)
    sy = 2.0 / max(height - 1, 1)
    return torch.stack([uv[..., 0] * sx - 1.0, uv[..., 1] * sy - 1.0], dim=-1)


def affine_resample(
    x: torch.Tensor, A, out_hw: tuple[int, int], mode: str = "bilinear"
) -> torch.Tensor:
    """Resample images so that output pixel ``u'`` shows input pixel ``A^-1 u'`` (zeros outside).

    x: (B, C, H, W); A: (3, 3) or (B, 3, 3) pixel map (numpy or torch) from input to output
    pixels in the OpenCV pixel-centre convention, e.g. a resize, zoom or face crop; out_hw:
    (H', W'). No anti-aliasing: a shrink by more than ~2x aliases.
    """
    B = x.shape[0]
    A = torch.as_tensor(A, dtype=torch.float64, device=x.device)
    Ainv = torch.linalg.inv(A).expand(B, 3, 3) if A.dim() == 2 else torch.linalg.inv(A)
    h2, w2 = out_hw
    g = pixel_grid(h2, w2, device=x.device, dtype=torch.float64)  # (H', W', 2)
    uv1 = torch.cat([g, torch.ones_like(g[..., :1])], -1)
    src = torch.einsum("bij,hwj->bhwi", Ainv[:, :2], uv1)  # (B, H', W', 2)
    grid = uv_to_grid(src, x.shape[-2], x.shape[-1]).to(x.dtype)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=True)


def affine_resample_views(x: torch.Tensor, A: torch.Tensor, out_hw: tuple[int, int],
                          mode: str = "bilinear") -> torch.Tensor:
    """V resampled views of each image: ``A`` (V, B, 3, 3) pixel maps as in
    :func:`affine_resample`; returns (V * B, C, H', W'), view-major, the same values as
    ``affine_resample(x.repeat(V, 1, 1, 1), A.reshape(-1, 3, 3), out_hw)`` without copying
    the input images V times (the views are stacked in one sampling grid per image)."""
    V, B = A.shape[:2]
    h2, w2 = out_hw
    Ainv = torch.linalg.inv(torch.as_tensor(A, dtype=torch.float64, device=x.device))
    g = pixel_grid(h2, w2, device=x.device, dtype=torch.float64)
    uv1 = torch.cat([g, torch.ones_like(g[..., :1])], -1)
    src = torch.einsum("vbij,hwj->bvhwi", Ainv[..., :2, :], uv1)  # (B, V, H', W', 2)
    grid = uv_to_grid(src, x.shape[-2], x.shape[-1]).to(x.dtype).reshape(B, V * h2, w2, 2)
    out = F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=True)
    C = x.shape[1]
    return out.reshape(B, C, V, h2, w2).permute(2, 0, 1, 3, 4).reshape(V * B, C, h2, w2)


def resize_affine(size_in: tuple[int, int], size_out: tuple[int, int]) -> np.ndarray:
    """3x3 pixel map of a resize from (H, W) to (H', W') in OpenCV pixel-centre coordinates:
    ``u' = (u + 0.5) * W'/W - 0.5``."""
    (h, w), (h2, w2) = size_in, size_out
    sx, sy = w2 / w, h2 / h
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def crop_affine(centre, side, out_hw: tuple[int, int]):
    """Pixel map (3, 3), or (B, 3, 3) for batched inputs, of a square crop of side ``side``
    (input pixels) centred on ``centre`` = (u, v), resized to ``out_hw``: the box centre lands
    on the output centre, ``u' = s (u - cu) + (W' - 1) / 2`` with ``s = W' / side``.

    centre: (2,) or (B, 2); side: scalar or (B,). numpy in, numpy out; torch in, torch out.
    """
    h2, w2 = out_hw
    xp = torch if isinstance(centre, torch.Tensor) else None
    if xp is None:
        c = np.asarray(centre, dtype=np.float64)
        sd = np.asarray(side, dtype=np.float64)
        sx, sy = w2 / sd, h2 / sd
        A = np.zeros(c.shape[:-1] + (3, 3))
    else:
        c = centre.double()
        sd = torch.as_tensor(side, dtype=torch.float64, device=c.device)
        sx, sy = w2 / sd, h2 / sd
        A = torch.zeros(c.shape[:-1] + (3, 3), dtype=torch.float64, device=c.device)
    A[..., 0, 0] = sx
    A[..., 1, 1] = sy
    A[..., 0, 2] = (w2 - 1) / 2 - sx * c[..., 0]
    A[..., 1, 2] = (h2 - 1) / 2 - sy * c[..., 1]
    A[..., 2, 2] = 1.0
    return A


def sample_image(
    image: torch.Tensor, uv: torch.Tensor, *, padding_mode: str = "zeros", mode: str = "bilinear"
) -> torch.Tensor:
    """Bilinearly sample ``image`` (B, C, H, W) at pixel positions ``uv``.

    ``uv`` is (B, h, w, 2) -> returns (B, C, h, w), or (B, N, 2) -> returns (B, N, C).
    Positions outside the image read ``padding_mode`` ("zeros", "border", "reflection").
    """
    if image.dim() != 4:
        raise ValueError(f"sample_image: image must be (B, C, H, W), got {tuple(image.shape)}")
    if uv.shape[0] != image.shape[0] or uv.shape[-1] != 2 or uv.dim() not in (3, 4):
        raise ValueError(
            f"sample_image: uv must be (B, h, w, 2) or (B, N, 2) with B={image.shape[0]}, "
            f"got {tuple(uv.shape)}"
        )
    H, W = image.shape[-2:]
    grid = uv_to_grid(uv.to(image.dtype), H, W)
    points = grid.dim() == 3
    if points:
        grid = grid[:, :, None, :]  # (B, N, 1, 2)
    out = F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=True)
    if points:
        return out[..., 0].transpose(1, 2)  # (B, N, C)
    return out


def _batch_k(K: torch.Tensor, B: int) -> torch.Tensor:
    if K.shape[-2:] != (3, 3) or K.dim() not in (2, 3):
        raise ValueError(f"K must be (3, 3) or (B, 3, 3), got {tuple(K.shape)}")
    if K.dim() == 2:
        K = K.expand(B, 3, 3)
    elif K.shape[0] != B:
        raise ValueError(f"K has batch {K.shape[0]}, expected {B}")
    return K


def backproject_depth(K: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """Lift a depth map to camera-frame points.

    K: (3, 3) or (B, 3, 3); depth: (B, 1, H, W) camera-frame z (mm). Returns (B, H, W, 3).
    """
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f"backproject_depth: depth must be (B, 1, H, W), got {tuple(depth.shape)}")
    B, _, H, W = depth.shape
    K = _batch_k(K, B).to(depth.dtype)
    uv = pixel_grid(H, W, device=depth.device, dtype=depth.dtype).reshape(1, H * W, 2)
    pts = backproject(K, uv.expand(B, -1, -1), depth.reshape(B, H * W))
    return pts.reshape(B, H, W, 3)


@dataclass
class WarpResult:
    """Output of :func:`inverse_warp`, all on the target pixel grid (H, W).

    image:           (B, C, H, W) source image sampled at the projections of target pixels.
    valid:           (B, 1, H, W) bool: the point lies in front of the source camera and
                     projects inside the source image.
    projected_depth: (B, 1, H, W) z of each target pixel's 3D point in the *source* camera
                     frame (the source depth synthesised from the target depth).
    uv:              (B, H, W, 2) where each target pixel lands in the source image (pixels).
    """

    image: torch.Tensor
    valid: torch.Tensor
    projected_depth: torch.Tensor
    uv: torch.Tensor


def inverse_warp(
    src_image: torch.Tensor,
    tgt_depth: torch.Tensor,
    src_T_tgt: torch.Tensor,
    K: torch.Tensor,
    K_src: torch.Tensor | None = None,
    *,
    min_depth: float = 1e-3,
    padding_mode: str = "zeros",
) -> WarpResult:
    """Synthesise the target view from the source image, target depth and relative pose.

    src_image: (B, C, Hs, Ws) source image (any channels: RGB, depth, masks).
    tgt_depth: (B, 1, H, W) target-camera depth z in mm.
    src_T_tgt: (B, 4, 4) rigid transform, ``X_src = R X_tgt + t`` (mm).
    K:         (3, 3) or (B, 3, 3) target intrinsics; ``K_src`` likewise (defaults to ``K``).
    min_depth: points with source-frame z below this are invalid (their z is clamped so
               that nothing becomes inf/nan, keeping gradients finite).

    Differentiable in ``src_image``, ``tgt_depth``, ``src_T_tgt`` and ``K``.
    """
    if src_image.dim() != 4:
        raise ValueError(
            f"inverse_warp: src_image must be (B, C, H, W), got {tuple(src_image.shape)}"
        )
    if tgt_depth.dim() != 4 or tgt_depth.shape[1] != 1:
        raise ValueError(
            f"inverse_warp: tgt_depth must be (B, 1, H, W), got {tuple(tgt_depth.shape)}"
        )
    B, _, H, W = tgt_depth.shape
    if src_image.shape[0] != B:
        raise ValueError(f"inverse_warp: src_image batch {src_image.shape[0]} != depth batch {B}")
    if src_T_tgt.shape != (B, 4, 4):
        raise ValueError(
            f"inverse_warp: src_T_tgt must be ({B}, 4, 4), got {tuple(src_T_tgt.shape)}"
        )
    K_src = K if K_src is None else K_src
    Hs, Ws = src_image.shape[-2:]

    pts_tgt = backproject_depth(K, tgt_depth).reshape(B, H * W, 3)
    pts_src = transform(src_T_tgt.to(tgt_depth.dtype), pts_tgt)  # (B, HW, 3)
    z = pts_src[..., 2]
    in_front = z > min_depth
    # clamp so that points behind the camera give finite (masked) projections
    z_safe = torch.where(in_front, z, torch.full_like(z, min_depth))
    pts_safe = torch.cat([pts_src[..., :2], z_safe[..., None]], dim=-1)
    uv = project(_batch_k(K_src, B).to(tgt_depth.dtype), pts_safe).reshape(B, H, W, 2)

    inside = (uv[..., 0] >= 0) & (uv[..., 0] <= Ws - 1) & (uv[..., 1] >= 0) & (uv[..., 1] <= Hs - 1)
    valid = (inside & in_front.reshape(B, H, W))[:, None]
    image = sample_image(src_image, uv, padding_mode=padding_mode)
    return WarpResult(image=image, valid=valid, projected_depth=z.reshape(B, 1, H, W), uv=uv)


def inside_warped_mask(src_mask: torch.Tensor, warp: WarpResult) -> torch.Tensor:
    """(B, 1, H, W) {0, 1} on the target grid: 1 where a target pixel samples fully inside the
    source mask (bilinear value > 0.999), at the positions ``warp`` already computed.

    src_mask: (B, 1, Hs, Ws) bool or {0, 1}. No gradient flows through the mask.
    """
    dtype = warp.image.dtype
    sampled = sample_image(src_mask.to(dtype), warp.uv.detach())
    return (sampled > 0.999).to(dtype)

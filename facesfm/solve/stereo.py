"""Photometric depth refinement: a multi-view plane sweep around a prior depth map.

The landmark-interpolated (or network) depth map of a frame is only as detailed as its prior:
200 landmarks span the face in triangles of about a centimetre, so the nose, the lids and the
lips are cut flat. Given the bundle-adjusted poses, :func:`refine_depth` corrects every masked
pixel of a reference frame photometrically, the way multi-view stereo does:

* hypotheses: the prior depth moved along the camera axis by ``-search_mm .. +search_mm`` in
  steps of ``step_mm`` (the whole window moves with the prior surface, so a patch follows the
  prior's shape instead of a fronto-parallel plane);
* each hypothesis back-projects the reference pixels, projects them into the source frames
  ``offsets`` away and samples their gray image (bilinear);
* the score of a hypothesis is the zero-mean normalised cross-correlation (NCC) of the
  ``(2 patch_radius + 1)^2`` windows, averaged over the ``best_views`` best-matching sources
  (robust to a source that sees the point occluded or at a grazing angle);
* the best hypothesis, refined to sub-step by a parabola through its neighbours, is kept when
  its score reaches ``min_ncc``, the best lies inside the search range (not at its end) and
  the two halves of the sources (those before the reference and those after it, in the
  middle of a sequence) each pick a depth within ``agree_mm`` of the other's. A window of
  smooth shading correlates at any depth, and with blurred, noisy or shiny skin the best
  score is often such a chance peak; two independent sets of views rarely agree on one.

Pixels that fail keep no depth (their mask is cleared), so fusion takes only photometrically
supported depth; :func:`facesfm.solve.fusion.consistent_masks` can then check the refined maps
against each other. Frames: depth is camera z in mm, poses ``cam_T_world`` (OpenCV), pixel
(r, c) at uv = (c, r), as in :mod:`facesfm.solve.fusion`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as nnf

from facesfm.errors import InputError

__all__ = ["StereoConfig", "StereoResult", "refine_depth"]


@dataclass(frozen=True)
class StereoConfig:
    """Options of the photometric refinement (``facesfm solve --stereo``).

    enabled:       run it (after the bundle adjustment, before fusion).
    offsets:       source frames relative to the reference (frames out of the sequence are
                   left out); on a 2-degree sweep, +-3 and +-6 frames are 6 and 12 degrees.
    search_mm:     half-width of the depth search around the prior (mm, scaled depth).
    step_mm:       hypothesis spacing (mm).
    patch_radius:  NCC window half-size (px).
    best_views:    sources averaged per pixel (the best-scoring ones).
    min_ncc:       least aggregated NCC for a pixel to keep its depth.
    min_texture:   least standard deviation of the gray reference window (0..1 intensities):
                   flatter windows are ambiguous and keep no depth.
    reference_step: refine every this many frames (the others keep no depth): neighbouring
                   frames of a dense sweep see the same surface, so fusing every second one
                   loses no coverage and halves the time.
    agree_mm:      the sources, in frame order, split in two halves; a pixel keeps its depth
                   only when the best depths of the halves' mean scores lie within this
                   distance (mm) of each other. 0 turns the check off; when it is on, a frame
                   with a single source keeps no depth.
    min_support:   least share of the prior's pixels (over the reference frames) that must
                   keep a depth for the refined maps to replace the prior (plain held-out
                   renders: about 75%). Off (0) by default: a low share has two
                   causes that call for opposite answers. Frames without photometric
                   evidence (the realistic renders: 12-16% kept) would be better served by
                   the prior; a prior far off the surface (the depth network's on an ICT
                   face) leaves the sweep few pixels within its range, and those few are
                   right: at 0.3 that solve fused the network's maps and its cloud went from
                   0.67 to 3.32 mm.
    """

    enabled: bool = False
    offsets: tuple[int, ...] = (-6, -3, 3, 6)
    search_mm: float = 6.0
    step_mm: float = 1.0
    patch_radius: int = 3
    best_views: int = 2
    min_ncc: float = 0.6
    min_texture: float = 0.005
    reference_step: int = 2
    agree_mm: float = 1.0
    min_support: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "offsets", tuple(int(o) for o in self.offsets))
        if not self.offsets or 0 in self.offsets:
            raise InputError(f"stereo: offsets must be non-empty and non-zero, got "
                             f"{self.offsets}")
        if not (self.search_mm > 0 and self.step_mm > 0 and self.step_mm < self.search_mm):
            raise InputError("stereo: need 0 < step_mm < search_mm")
        if self.patch_radius < 1 or not 1 <= self.best_views <= len(self.offsets):
            raise InputError(f"stereo: patch_radius must be >= 1 and best_views in "
                             f"1..{len(self.offsets)}")
        if not -1.0 <= self.min_ncc <= 1.0 or self.min_texture < 0:
            raise InputError("stereo: min_ncc must be in [-1, 1] and min_texture >= 0")
        if self.reference_step < 1:
            raise InputError("stereo: reference_step must be >= 1")
        if self.agree_mm < 0 or not 0 <= self.min_support <= 1:
            raise InputError("stereo: agree_mm must be >= 0 and min_support in [0, 1]")

    @property
    def hypotheses(self) -> np.ndarray:
        n = round(self.search_mm / self.step_mm)
        return np.arange(-n, n + 1, dtype=np.float64) * self.step_mm


@dataclass(frozen=True)
class StereoResult:
    """depth (F, H, W) refined (unscaled, like the input); mask (F, H, W) the pixels that kept
    a depth; score (F, H, W) their aggregated NCC (NaN elsewhere); shift_mm (F, H, W) the
    correction applied, in scaled mm (NaN elsewhere); reference (F,) the frames refined."""

    depth: np.ndarray
    mask: np.ndarray
    score: np.ndarray
    shift_mm: np.ndarray
    reference: np.ndarray

    def summary(self, prior_mask: np.ndarray) -> dict:
        """Counts over the reference frames: pixels kept of the prior's masked pixels, the
        median |correction| and NCC of those kept."""
        kept = int(self.mask.sum())
        total = int(np.asarray(prior_mask)[self.reference].sum())
        shift = self.shift_mm[self.mask]
        return {"reference_frames": int(self.reference.sum()), "kept_pixels": kept,
                "prior_pixels": total,
                "kept_fraction": kept / max(total, 1),
                "shift_mm_median_abs": float(np.median(np.abs(shift))) if kept else None,
                "score_median": float(np.median(self.score[self.mask])) if kept else None}


def gray_images(images: np.ndarray) -> torch.Tensor:
    """(F, H, W) float32 luma (BT.601) in [0, 1] of (F, H, W, 3) uint8 RGB frames."""
    im = torch.as_tensor(np.asarray(images), dtype=torch.float32) / 255.0
    return im @ torch.tensor([0.299, 0.587, 0.114])


def parabola_offset(c_m: torch.Tensor, c_0: torch.Tensor, c_p: torch.Tensor) -> torch.Tensor:
    """Sub-sample offset in [-0.5, 0.5] of the peak of the parabola through three equally
    spaced scores (before, at and after a discrete maximum); 0 where they are not concave."""
    den = c_m - 2 * c_0 + c_p
    return torch.where(den < -1e-9, 0.5 * (c_m - c_p) / den.clamp(max=-1e-9),
                       torch.zeros_like(den)).clamp(-0.5, 0.5)


def box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over (2r+1)^2 windows of (..., h, w), edge windows averaged over what they hold.

    One grouped convolution with a window of ones (every leading index its own channel), then
    a division by the number of pixels each window holds. On the CPU this is about 4x faster
    than two separable average-pooling passes (the transposes between them copy the whole
    stack); the two differ by about 3e-7 on values in [0, 1]."""
    shape = x.shape
    h, w = shape[-2:]
    k = 2 * r + 1
    y = x.reshape(1, -1, h, w)
    C = y.shape[1]
    sums = nnf.conv2d(y, x.new_ones(C, 1, k, k), padding=r, groups=C)

    def held(n: int) -> torch.Tensor:  # pixels of each window along an axis of length n
        i = torch.arange(n)
        return ((i + r).clamp(max=n - 1) - (i - r).clamp(min=0) + 1).to(x.dtype)

    return (sums / (held(h)[:, None] * held(w)[None, :])).reshape(shape)


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return None
    H, W = mask.shape
    return (slice(max(rows.min() - margin, 0), min(rows.max() + margin + 1, H)),
            slice(max(cols.min() - margin, 0), min(cols.max() + margin + 1, W)))


def refine_depth(images: np.ndarray, depth: np.ndarray, mask: np.ndarray, K: np.ndarray,
                 cam_T_world: np.ndarray, scale: np.ndarray | None = None,
                 cfg: StereoConfig = StereoConfig()) -> StereoResult:
    """Refine every frame's masked depth photometrically against its neighbours.

    images: (F, H, W, 3) uint8; depth: (F, H, W) mm (multiplied by ``scale`` (F,) to get the
    poses' units, default 1); mask: (F, H, W) bool; K: (3, 3); cam_T_world: (F, 4, 4).
    """
    images = np.asarray(images)
    depth = np.asarray(depth, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    F, H, W = depth.shape
    if images.shape[:3] != (F, H, W) or mask.shape != (F, H, W):
        raise ValueError(f"images {images.shape}, depth {depth.shape} and mask {mask.shape} "
                         f"disagree")
    poses = np.asarray(cam_T_world, dtype=np.float64)
    if poses.shape != (F, 4, 4):
        raise ValueError(f"cam_T_world must be ({F}, 4, 4), got {poses.shape}")
    scale = np.ones(F) if scale is None else np.asarray(scale, dtype=np.float64)
    if not np.all(np.isfinite(poses)) or not np.all(np.isfinite(scale)):
        raise InputError("stereo: the poses or depth scales are not finite")
    gray = gray_images(images)
    Kinv = np.linalg.inv(K)
    hyp = torch.as_tensor(cfg.hypotheses, dtype=torch.float32)
    nh = len(hyp)
    r = cfg.patch_radius
    out_d = np.zeros_like(depth)
    out_m = np.zeros_like(mask)
    out_s = np.full(depth.shape, np.nan)
    out_x = np.full(depth.shape, np.nan)
    refs = np.zeros(F, dtype=bool)
    for f in range(F):
        sources = sorted(f + o for o in cfg.offsets if 0 <= f + o < F)
        box = _bbox(mask[f], r + 1)
        if (f % cfg.reference_step or box is None or len(sources) < cfg.best_views
                or (cfg.agree_mm > 0 and len(sources) < 2)):
            continue
        refs[f] = True
        rs, cs = box
        h, w = rs.stop - rs.start, cs.stop - cs.start
        vv, uu = np.mgrid[rs, cs]
        rays = np.stack([uu, vv, np.ones_like(uu)], -1).reshape(-1, 3) @ Kinv.T  # z = 1
        d0 = torch.as_tensor(depth[f, rs, cs] * scale[f], dtype=torch.float32)
        m0 = torch.as_tensor(mask[f, rs, cs])
        zs = d0[None] + hyp[:, None, None]  # (nh, h, w)
        ref = gray[f, rs, cs]
        mr = box_mean(ref, r)
        vr = (box_mean(ref * ref, r) - mr * mr).clamp_min(0)
        Twc = np.linalg.inv(poses[f])
        scores = []
        for g in sources:
            T = poses[g] @ Twc
            A = torch.as_tensor(rays @ T[:3, :3].T, dtype=torch.float32).reshape(1, h, w, 3)
            t = torch.as_tensor(T[:3, 3], dtype=torch.float32)
            X = zs[..., None] * A + t  # (nh, h, w, 3) in frame g
            z = X[..., 2]
            front = z > 1e-3
            zc = torch.where(front, z, torch.ones_like(z))
            u = K[0, 0] * X[..., 0] / zc + K[0, 2]
            v = K[1, 1] * X[..., 1] / zc + K[1, 2]
            inside = front & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
            grid = torch.stack([2 * u / (W - 1) - 1, 2 * v / (H - 1) - 1], -1)
            s = nnf.grid_sample(gray[g][None, None], grid.reshape(1, nh * h, w, 2),
                                mode="bilinear", padding_mode="border",
                                align_corners=True).reshape(nh, h, w)
            ms, ss, sr, si = box_mean(torch.stack([s, s * s, s * ref[None], inside.float()]),
                                      r)
            vs = (ss - ms * ms).clamp_min(0)
            cov = sr - ms * mr[None]
            ncc = cov / torch.sqrt(vr[None] * vs + 1e-10)
            # a window reaching out of the source image scores nothing
            ok = si > 0.999
            scores.append(torch.where(ok, ncc, torch.full_like(ncc, -1.0)))
        S = torch.stack(scores)  # (n_src, nh, h, w)
        agg = S.topk(cfg.best_views, dim=0).values.mean(0)  # (nh, h, w)
        best = agg.argmax(0)  # (h, w)
        inner = (best > 0) & (best < nh - 1)
        bi = best.clamp(1, nh - 2)
        c0 = agg.gather(0, (bi - 1)[None])[0]
        c1 = agg.gather(0, bi[None])[0]
        c2 = agg.gather(0, (bi + 1)[None])[0]
        frac = parabola_offset(c0, c1, c2)
        shift = hyp[bi] + frac * cfg.step_mm
        score = agg.gather(0, best[None])[0]
        keep = (m0 & inner & (score >= cfg.min_ncc)
                & (vr.sqrt() >= cfg.min_texture) & (d0 + shift > 0))
        if cfg.agree_mm > 0:
            half = len(sources) // 2
            before = hyp[S[:half].mean(0).argmax(0)]
            after = hyp[S[half:].mean(0).argmax(0)]
            keep &= (before - after).abs() <= cfg.agree_mm
        kp = keep.numpy()
        out_m[f, rs, cs] = kp
        out_d[f, rs, cs] = np.where(kp, (d0 + shift).numpy() / scale[f], 0.0)
        out_s[f, rs, cs] = np.where(kp, score.numpy(), np.nan)
        out_x[f, rs, cs] = np.where(kp, shift.numpy(), np.nan)
    return StereoResult(out_d, out_m, out_s, out_x, refs)

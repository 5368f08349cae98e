"""Photometric point tracks: sub-pixel patch matches between neighbouring frames.

The landmark detector places each landmark within about 3 px, and its errors are not
independent between frames (a landmark near the silhouette is pulled the same way in every
view), so the bundle adjustment fits poses that agree with the detector's bias: a few degrees
off on held-out faces. Skin texture gives far more precise evidence. :func:`patch_tracks`
builds it, vectorised in torch:

* keyframes every ``keyframe_step`` frames; in each, one keypoint per ``grid_px`` cell of the
  face mask: the pixel whose window has the most texture (gray standard deviation);
* each keypoint is lifted with the frame's depth map and projected into the frames up to
  ``neighbours`` away with the current poses: that is only the prediction;
* the measurement is a zero-mean NCC search of the keypoint's ``(2 patch_radius + 1)^2``
  window over +-``search_px`` px around the prediction, refined to sub-pixel by a parabola in
  each axis; it counts when the NCC reaches ``min_ncc`` and the match found back from that
  frame lands within ``max_backward_px`` of the keypoint (a forward-backward check);
* with ``affine`` (default) the keypoint's window is resampled as the other frame sees it:
  the surface around the keypoint, lifted with the depth map, is projected there
  (:func:`_local_maps`), so the window foreshortens with the turning head. A square window
  compares a patch with its foreshortened self, which pulls the match along the motion; on a
  plain built-in sweep with the true poses and depth, the tracks' mean error fell from 0.19
  to 0.12 px, and the focal length estimated from them (true landmarks, started 30% long or
  short) from 513 and 512 px to 496 and 498 px (true: 500).

A keypoint and its matches form one track (one 3D point in the BA). The measurement depends
on the poses and depth only through the search window, so tracks correct the poses they were
predicted with (:func:`facesfm.solve.pipeline.track_bundle_adjust`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as nnf

from facesfm.errors import InputError
from facesfm.geometry.camera import backproject, invert_pose, project, transform
from facesfm.solve.stereo import box_mean, gray_images, parabola_offset
from facesfm.solvers.landmark_ba import KernelKind

__all__ = ["BA_BYTES_PER_PAIR", "TrackConfig", "Tracks", "patch_tracks"]

#: Peak memory of the joint BA per (frame, point) pair of its dense layout: measured 3.25 GB
#: peak (0.9 GB before it) for 181 frames x (200 landmarks + 8,276 tracks).
BA_BYTES_PER_PAIR = 1500


@dataclass(frozen=True)
class TrackConfig:
    """Options of the photometric tracks and the joint BA that uses them (``--tracks``).

    enabled:          build tracks and re-run the BA with them.
    keyframe_step:    a keyframe every this many frames.
    neighbours:       match each keyframe with the frames up to this many away (20: +-40
                      degrees on the paper's sweep). The warped windows hold over such turns,
                      and the long baselines pin the rotation: on one built-in face at 500
                      px, 4 / 8 / 12 / 20 gave 1.77 / 1.19 / 0.68 / 0.32 deg in about the same
                      time; on 20 held-out ICT faces 4 -> 20 took the accurate path from 1.65
                      to 0.88 deg and 0.84 to 0.52 mm.
    far_step:         beyond 4 frames, match only every ``far_step``-th frame (1: all): a
                      speed knob. On 2 built-in sweeps and 5 held-out ICT faces, 1 / 2 / 4
                      gave a mean 0.77 / 0.86 / 0.96 deg with the tracks stage taking 4.0-6.8
                      / 3.0-3.8 / 2.1-2.5 s (at 1200 px: 0.55 / 0.97 / 1.33 deg).
    grid_px:          one keypoint per cell of this size (16 px: ~3300 tracks on a 384 px
                      sweep; 12 px gives 5500 for 0.03 deg less rotation error at twice the BA
                      time).
    patch_radius:     NCC window half-size (px).
    search_px:        search half-width around the predicted position (px).
    min_ncc:          least NCC of a match.
    min_texture:      least gray standard deviation of a keypoint's window (0..1 intensities).
    max_backward_px:  forward-backward disagreement above which a match is dropped.
    landmark_weight:  weight of the detector's landmark observations in the joint BA (the
                      tracks weigh 1): the landmarks tie distant frames together and fix
                      the scale; the tracks carry the precision (on held-out ICT faces,
                      when tracks reached only 4 frames, a weight of 1 gave 0.70 deg and 0.1
                      gave 1.16 deg: the whole sweep's rotation drifted without the
                      landmarks).
    ftol:             the joint BA stops when a step lowers the cost by less than this
                      fraction (tighter only adds iterations: on a held-out ICT face 1e-4 and
                      1e-6 reached the same mean rotation error to 0.001 deg, in 6 and 19
                      iterations).
    affine:           match windows warped by the surface's local map instead of square
                      ones (see the module docstring).
    kernel, kernel_px: the robust kernel of the joint BA, in place of the landmark BA's
                      (``ba.kernel``, Huber at 2 px). A wrong match (the window landing on
                      similar texture nearby) is off by pixels where the right ones are off
                      by a tenth or two, and Huber's linear tail still lets it pull; Cauchy's
                      influence fades. Mean rotation error on the first 6 plain / 6 realistic
                      held-out ICT faces: Huber 2 px 0.82 / 2.64 deg; Cauchy 0.5 px 0.37 /
                      1.63; 0.25 px 0.27 / 1.48 (clouds within 0.03 mm of Huber's). Changing
                      the kernel of the landmark BA too gained little more (Cauchy 1 px on the
                      fast path: 1.63 -> 1.60 and 3.53 -> 3.33 deg), so only the joint BA
                      takes it.
    max_ba_gb:        the joint BA holds dense (frames x points) arrays, about
                      :data:`BA_BYTES_PER_PAIR` per frame-point pair; where the tracks would
                      take it past this many GB they are thinned, evenly over the sequence,
                      with a warning (:meth:`Tracks.thinned`). 601 frames of the paper's
                      sweep make 27,600 tracks: 25 GB, more than a 24 GB machine holds.
    """

    enabled: bool = False
    keyframe_step: int = 2
    neighbours: int = 20
    grid_px: int = 16
    patch_radius: int = 4
    search_px: int = 6
    min_ncc: float = 0.9
    min_texture: float = 0.01
    max_backward_px: float = 0.5
    landmark_weight: float = 1.0
    ftol: float = 1e-4
    max_ba_gb: float = 8.0
    affine: bool = True
    far_step: int = 1
    kernel: KernelKind = KernelKind.CAUCHY
    kernel_px: float = 0.25

    def offsets(self) -> np.ndarray:
        """The frame offsets each keyframe is matched at: every one up to 4 away, then every
        ``far_step``-th up to ``neighbours``, on both sides."""
        near = np.arange(1, min(4, self.neighbours) + 1)
        far = np.arange(near[-1] + self.far_step, self.neighbours + 1, self.far_step)
        one = np.concatenate([near, far])
        return np.concatenate([-one[::-1], one])

    def __post_init__(self):
        if self.keyframe_step < 1 or self.neighbours < 1 or self.far_step < 1 \
                or self.grid_px < 2:
            raise InputError("tracks: keyframe_step, neighbours and far_step must be >= 1, "
                             "grid_px >= 2")
        if self.patch_radius < 1 or self.search_px < 1:
            raise InputError("tracks: patch_radius and search_px must be >= 1")
        if not -1.0 <= self.min_ncc <= 1.0 or self.min_texture < 0 or \
                not self.max_backward_px > 0 or self.landmark_weight < 0 or not self.ftol > 0 \
                or not self.max_ba_gb > 0 or not self.kernel_px > 0:
            raise InputError("tracks: min_ncc in [-1, 1], min_texture >= 0, "
                             "max_backward_px > 0, landmark_weight >= 0, ftol > 0, "
                             "max_ba_gb > 0 and kernel_px > 0 required")
        if not isinstance(self.kernel, KernelKind):
            raise InputError(f"tracks.kernel must be a KernelKind, got {self.kernel!r}")


@dataclass(frozen=True)
class Tracks:
    """uv (F, T, 2) pixels and weight (F, T) (1 = observed, 0 = not) of T tracks; keyframe (T,)
    the frame each track started from; ncc (F, T) the match scores (NaN: none)."""

    uv: np.ndarray
    weight: np.ndarray
    keyframe: np.ndarray
    ncc: np.ndarray

    def __len__(self) -> int:
        return self.uv.shape[1]

    def thinned(self, landmarks: int, max_gb: float) -> Tracks:
        """These tracks, or as many of them as a joint BA with ``landmarks`` landmarks over
        these frames holds within ``max_gb`` (:data:`BA_BYTES_PER_PAIR`), picked evenly in
        their order (keyframe by keyframe, so every part of the sequence keeps its share)."""
        F, T = self.weight.shape
        fit = int(max_gb * 1e9 / BA_BYTES_PER_PAIR / F) - landmarks
        if fit >= T:
            return self
        keep = np.unique(np.linspace(0, T - 1, max(fit, 0)).round().astype(int))
        return Tracks(self.uv[:, keep], self.weight[:, keep], self.keyframe[keep],
                      self.ncc[:, keep])

    def summary(self) -> dict:
        n = (self.weight > 0).sum(0)
        return {"tracks": len(self), "observations": int(n.sum()),
                "mean_length": float(n.mean()) if len(self) else 0.0,
                "median_ncc": float(np.nanmedian(self.ncc)) if len(self) else None}


def _sample(imgs: torch.Tensor, which: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear values (n, P, P) of the images ``imgs`` (N, H, W) at pixel positions ``uv``
    (n, P, P, 2), window i read in image ``which[i]``. One ``grid_sample`` for every image: the
    windows are grouped by image into a padded batch (each value is what sampling that image
    alone gives)."""
    N, H, W = imgs.shape
    n, P = uv.shape[:2]
    if n == 0:
        return torch.zeros(0, P, P)
    grid = torch.stack([2 * uv[..., 0] / (W - 1) - 1, 2 * uv[..., 1] / (H - 1) - 1], -1)
    if N == 1:
        return nnf.grid_sample(imgs[:, None], grid.reshape(1, n * P, P, 2), mode="bilinear",
                               padding_mode="border", align_corners=True).reshape(n, P, P)
    order = torch.argsort(which, stable=True)
    counts = torch.bincount(which, minlength=N)
    first = torch.cumsum(counts, 0) - counts
    w = which[order]
    slot = torch.arange(n) - first[w]
    padded = torch.zeros(N, int(counts.max()), P, P, 2)
    padded[w, slot] = grid[order]
    out = nnf.grid_sample(imgs[:, None], padded.reshape(N, -1, P, 2), mode="bilinear",
                          padding_mode="border", align_corners=True)
    vals = torch.empty(n, P, P)
    vals[order] = out.reshape(N, -1, P, P)[w, slot]
    return vals


def _patches(imgs: torch.Tensor, which: torch.Tensor, centres: torch.Tensor, radius: int,
             A: torch.Tensor | None = None) -> torch.Tensor:
    """(n, 2r+1, 2r+1) bilinear windows of ``imgs[which]`` (N, H, W; which (n,)) centred at
    ``centres`` (n, 2) uv: window pixel (dx, dy) is read at ``centres + A @ (dx, dy)``, A
    (n, 2, 2), or at ``centres + (dx, dy)`` without A."""
    o = torch.arange(-radius, radius + 1, dtype=torch.float32)
    n, P = len(centres), len(o)
    if A is None:
        u = (centres[:, 0, None, None] + o[None, None, :]).expand(-1, P, -1)
        v = (centres[:, 1, None, None] + o[None, :, None]).expand(-1, -1, P)
        uv = torch.stack([u, v], -1)
    else:
        off = torch.stack(torch.meshgrid(o, o, indexing="xy"), -1)  # (P, P, 2) = (dx, dy)
        uv = centres[:, None, None, :] + torch.einsum("nij,abj->nabi", A.float(), off)
    return _sample(imgs, which, uv.reshape(n, P, P, 2))


def _local_maps(K: np.ndarray, kp: np.ndarray, z: np.ndarray, depth: np.ndarray,
                T_fg: np.ndarray, radius: int) -> np.ndarray:
    """(n, 2, 2) the local affine maps from keyframe pixel offsets around each keypoint kp
    (n, 2) (depth z) to pixel offsets in another frame (``T_fg``: that frame from the
    keyframe's camera): the surface around a keypoint, lifted with the keyframe's depth map
    ``depth`` (H, W) at +-``radius`` px, projected there; central differences. Where the depth
    map has no value beside a keypoint, or the map is near-singular or reflecting, the
    identity (a fronto-parallel window)."""
    H, W = depth.shape
    n = len(kp)
    steps = np.array([[radius, 0], [-radius, 0], [0, radius], [0, -radius]], dtype=np.float64)
    q = kp[:, None, :] + steps[None]  # (n, 4, 2)
    qi = np.clip(np.rint(q).astype(int), 0, [W - 1, H - 1])
    zq = depth[qi[..., 1], qi[..., 0]]
    valid = (zq > 0).all(1)
    zq = np.where(valid[:, None], zq, z[:, None])
    Xc = backproject(K, q.reshape(-1, 2), zq.reshape(-1)).reshape(n, 4, 3)
    Xg = transform(T_fg, Xc.reshape(-1, 3)).reshape(n, 4, 3)
    Xg[..., 2] = np.maximum(Xg[..., 2], 1e-3)
    pg = project(K, Xg.reshape(-1, 3)).reshape(n, 4, 2)
    A = np.stack([(pg[:, 0] - pg[:, 1]) / (2 * radius), (pg[:, 2] - pg[:, 3]) / (2 * radius)],
                 -1)  # columns: d(uv_g)/d(dx), d(uv_g)/d(dy)
    det = np.linalg.det(A)
    ok = valid & np.isfinite(A).all((1, 2)) & (det > 0.25) & (det < 4.0)
    return np.where(ok[:, None, None], A, np.eye(2))


def _normalise(p: torch.Tensor) -> torch.Tensor:
    p = p - p.mean((-2, -1), keepdim=True)
    return p / p.square().sum((-2, -1), keepdim=True).sqrt().clamp_min(1e-8)


def _match(template: torch.Tensor, imgs: torch.Tensor, which: torch.Tensor,
           guess: torch.Tensor, search: int, radius: int,
           chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Best NCC position of each normalised template (n, P, P) in its image ``imgs[which]``
    (N, H, W; which (n,)) within +-search px of ``guess`` (n, 2): (uv (n, 2), score (n,));
    score -inf where the best is on the border of the search window (no peak inside it).

    A template has zero mean and unit norm, so its NCC with a window is its correlation with
    the window over the window's spread: one grouped convolution for the correlations, box
    sums for the spreads: 4-5x faster than forming every window. In float32 the matches are
    within 1.2e-4 px of a float64 evaluation (forming the windows: 2e-5), measured on a
    built-in face's keypoints."""
    P = 2 * radius + 1
    S = 2 * search + 1
    box = torch.ones(1, 1, P, P)
    uv_out = torch.empty_like(guess)
    sc_out = torch.empty(len(guess))
    for a in range(0, len(guess), chunk):
        g = guess[a:a + chunk]
        t = template[a:a + chunk]
        n = len(g)
        region = _patches(imgs, which[a:a + chunk], g, radius + search)  # (n, Q, Q)
        # NCC ignores an offset of the window; without the region's mean the box sums below
        # lose less to cancellation in float32
        region = region - region.mean((-2, -1), keepdim=True)
        corr = nnf.conv2d(region[None], t[:, None].to(region.dtype), groups=n)[0]  # (n, S, S)
        # the box sums as grouped convolutions too: the same values as one plain box filter
        # over the batch, about 10x faster on the CPU
        ones = box.to(region.dtype).expand(n, 1, P, P)
        s1 = nnf.conv2d(region[None], ones, groups=n)[0]
        s2 = nnf.conv2d(region.square()[None], ones, groups=n)[0]
        ncc = corr / (s2 - s1 * s1 / (P * P)).clamp_min(0).sqrt().clamp_min(1e-8)
        flat = ncc.reshape(n, -1)
        best, idx = flat.max(1)
        iy, ix = idx // S, idx % S
        inner = (ix > 0) & (ix < S - 1) & (iy > 0) & (iy < S - 1)
        ixc, iyc = ix.clamp(1, S - 2), iy.clamp(1, S - 2)
        r = torch.arange(n)
        dx = parabola_offset(ncc[r, iyc, ixc - 1], ncc[r, iyc, ixc], ncc[r, iyc, ixc + 1])
        dy = parabola_offset(ncc[r, iyc - 1, ixc], ncc[r, iyc, ixc], ncc[r, iyc + 1, ixc])
        uv_out[a:a + chunk, 0] = g[:, 0] + (ixc - search).to(g.dtype) + dx
        uv_out[a:a + chunk, 1] = g[:, 1] + (iyc - search).to(g.dtype) + dy
        sc_out[a:a + chunk] = torch.where(inner, best, torch.full_like(best, -float("inf")))
    return uv_out, sc_out


def _keypoints(gray: torch.Tensor, mask: np.ndarray, cfg: TrackConfig) -> torch.Tensor:
    """(n, 2) integer uv: the most textured pixel of each grid cell inside the mask."""
    r = cfg.patch_radius
    m = box_mean(gray, r)
    std = (box_mean(gray * gray, r) - m * m).clamp_min(0).sqrt()
    H, W = gray.shape
    margin = r + cfg.search_px + 2
    inside = torch.as_tensor(mask).clone()
    inside[:margin] = False
    inside[-margin:] = False
    inside[:, :margin] = False
    inside[:, -margin:] = False
    # whole window in the mask, so the patch is face texture and not the silhouette
    full = box_mean(inside.float(), r)
    score = torch.where((full > 0.999) & (std >= cfg.min_texture), std,
                        torch.full_like(std, -1.0))
    g = cfg.grid_px
    Hc, Wc = H // g * g, W // g * g
    best, idx = nnf.max_pool2d(score[None, None, :Hc, :Wc], g, g, return_indices=True)
    best, idx = best.flatten(), idx.flatten()
    idx = idx[best > 0]
    return torch.stack([idx % Wc, idx // Wc], 1).float()


def patch_tracks(images: np.ndarray, depth: np.ndarray, mask: np.ndarray, K: np.ndarray,
                 cam_T_world: np.ndarray, scale: np.ndarray | None = None,
                 cfg: TrackConfig = TrackConfig()) -> Tracks:
    """Tracks of the F frames; ``depth`` (F, H, W) x ``scale`` (F,) and ``cam_T_world``
    (F, 4, 4) only predict where to search (see the module docstring)."""
    images = np.asarray(images)
    depth = np.asarray(depth, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    F, H, W = depth.shape
    poses = np.asarray(cam_T_world, dtype=np.float64)
    scale = np.ones(F) if scale is None else np.asarray(scale, dtype=np.float64)
    gray = gray_images(images)
    r, s = cfg.patch_radius, cfg.search_px
    lo, hi_u, hi_v = r + s + 1, W - r - s - 2, H - r - s - 2
    uvs, ws, kfs, nccs = [], [], [], []
    for f in range(0, F, cfg.keyframe_step):
        kp = _keypoints(gray[f], mask[f] & (depth[f] > 0), cfg)
        if len(kp) == 0:
            continue
        ki = kp.long()
        kpn = kp.numpy().astype(np.float64)
        z = depth[f][ki[:, 1].numpy(), ki[:, 0].numpy()] * scale[f]
        Xw = transform(invert_pose(poses[f]), backproject(K, kpn, z))
        n = len(kp)
        uv = np.zeros((F, n, 2))
        w = np.zeros((F, n))
        sc = np.full((F, n), np.nan)
        uv[f] = kp.numpy()
        w[f] = 1.0
        # every frame's predictions first, then one batched match over all of them
        frames, points, guesses, maps = [], [], [], []
        for g in f + cfg.offsets():
            if not 0 <= g < F:
                continue
            Xg = transform(poses[g], Xw)
            front = Xg[:, 2] > 1e-3
            Xg[~front, 2] = 1.0  # masked below
            pred = project(K, Xg)
            ok = front & (pred[:, 0] >= lo) & (pred[:, 0] <= hi_u) & \
                (pred[:, 1] >= lo) & (pred[:, 1] <= hi_v)
            if not ok.any():
                continue
            sel = np.flatnonzero(ok)
            frames.append(np.full(len(sel), g))
            points.append(sel)
            guesses.append(pred[sel])
            if cfg.affine:
                # the keyframe's window as frame g sees it (foreshortened as the head turns)
                maps.append(_local_maps(K, kpn[sel], z[sel], depth[f] * scale[f],
                                        poses[g] @ invert_pose(poses[f]), r))
        if not frames:
            continue
        frames, points = np.concatenate(frames), np.concatenate(points)
        used, which = np.unique(frames, return_inverse=True)
        which = torch.as_tensor(which)
        imgs = gray[torch.as_tensor(used)]
        guess = torch.as_tensor(np.concatenate(guesses), dtype=torch.float32)
        kp_m = kp[torch.as_tensor(points)]
        key = torch.zeros(len(points), dtype=torch.long)  # the keyframe, as image 0 of one
        if cfg.affine:
            A = torch.as_tensor(np.concatenate(maps))
            t_g = _normalise(_patches(gray[f][None], key, kp_m, r,
                                      torch.linalg.inv(A)))
            m_uv, m_sc = _match(t_g, imgs, which, guess, s, r)
            # the window at the match as the keyframe sees it
            back_t = _normalise(_patches(imgs, which, m_uv, r, A))
        else:  # one square window per keypoint, repeated for each frame it is matched in
            t_g = _normalise(_patches(gray[f][None], key[:0].new_zeros(n), kp, r))
            m_uv, m_sc = _match(t_g[torch.as_tensor(points)], imgs, which, guess, s, r)
            back_t = _normalise(_patches(imgs, which, m_uv, r))
        # back from each frame: the window at the match must find the keypoint again
        b_uv, b_sc = _match(back_t, gray[f][None], key, kp_m, 2, r)
        fb = (b_uv - kp_m).norm(dim=1)
        good = ((m_sc >= cfg.min_ncc) & (b_sc >= cfg.min_ncc)
                & (fb <= cfg.max_backward_px)).numpy()
        gi, pi = frames[good], points[good]
        uv[gi, pi] = m_uv.numpy()[good]
        w[gi, pi] = 1.0
        sc[gi, pi] = m_sc.numpy()[good]
        keep = (w > 0).sum(0) >= 2
        uvs.append(uv[:, keep])
        ws.append(w[:, keep])
        kfs.append(np.full(int(keep.sum()), f))
        nccs.append(sc[:, keep])
    if not uvs or sum(u.shape[1] for u in uvs) == 0:
        raise InputError("tracks: no keypoint could be matched between neighbouring frames "
                         "(too little texture, or the frames are too far apart)")
    return Tracks(np.concatenate(uvs, 1), np.concatenate(ws, 1), np.concatenate(kfs),
                  np.concatenate(nccs, 1))

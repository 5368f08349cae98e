"""Stage 2: unsupervised depth and pose with the bundle-adjustment layer in the graph.

Per sample (F consecutive frames of one sequence):

1. landmarks ``uv`` (F, N, 2) and weights from the frozen stage-1 detector (or the rendered
   labels with ``sfm.landmark_source = "gt"``);
2. DepthNet depth for every frame; PoseNet motion ``(f+1)_T_f`` of consecutive frames, chained
   into ``cam_T_world`` with the world = camera 0;
3. the BA layer (:mod:`facesfm.training.ba_layer`: :class:`facesfm.solvers.LMSolver`, depth
   parameterisation of equation 2 over all frame pairs of the sample) refines those poses from the landmarks and the predicted
   depth at them; gradients reach the depth network through the solver's backward mode;
4. the landmark BA loss (eq. 2), view synthesis (eq. 4), depth consistency (eq. 5) and
   smoothness are computed with the refined poses; a pose-distillation term (the landmark BA
   loss of the learned poses with the depth detached) trains PoseNet to start near the optimum.

Ground-truth depth and poses never enter the loss: :class:`SfmInputs` is all the loss sees,
and it carries neither. They are read only by :meth:`SfmTask.validate`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from facesfm.data.dataset import AugmentConfig, SequenceDataset, SequenceSample, collate_samples
from facesfm.errors import InputError
from facesfm.geometry.camera import invert_pose
from facesfm.losses import (
    depth_consistency_loss,
    landmark_ba_loss,
    sample_depth_at,
    smoothness_loss,
    view_synthesis_loss,
)
from facesfm.networks import DepthNet, DepthNetConfig, LandmarkNet, PoseNet, PoseNetConfig
from facesfm.networks.landmark import ba_weights
from facesfm.solvers.landmark_ba import BAConfig
from facesfm.solvers.lm import BackwardMode
from facesfm.training.ba_layer import factorised_poses, refine_poses
from facesfm.training.config import LossWeights, TrainConfig
from facesfm.training.distributed import DistInfo
from facesfm.training.landmarks import load_landmark_net
from facesfm.training.loop import TrainResult, run_training, seed_everything
from facesfm.training.metrics import depth_errors, relative_rotation_errors

__all__ = [
    "SfmInputs",
    "SfmNets",
    "SfmTask",
    "build_sfm_nets",
    "chain_poses",
    "consecutive_pairs",
    "inputs_from_sample",
    "motion_distillation",
    "pair_distillation",
    "random_pairs",
    "sfm_datasets",
    "sfm_losses",
    "train_sfm",
]


@dataclass
class SfmInputs:
    """What the stage-2 loss may see (no ground-truth depth or poses).

    images: (B, F, 3, H, W) in [0, 1]; mask: (B, F, 1, H, W) bool face masks;
    K: (B, 3, 3); uv: (B, F, N, 2) landmark pixels; weight: (B, F, N) BA weights (0 = unseen).
    """

    images: torch.Tensor
    mask: torch.Tensor
    K: torch.Tensor
    uv: torch.Tensor
    weight: torch.Tensor


class SfmNets(nn.Module):
    """DepthNet + PoseNet as one module (what DDP wraps and the checkpoint stores)."""

    def __init__(self, depth_cfg: DepthNetConfig, pose_cfg: PoseNetConfig,
                 checkpoint_frames: int = 0):
        super().__init__()
        self.depth = DepthNet(depth_cfg)
        self.pose = PoseNet(pose_cfg)
        #: chunk size of activation checkpointing while gradients are on (0 = off); see
        #: SfmStageConfig.checkpoint_frames. Not part of the weights.
        self.checkpoint_frames = int(checkpoint_frames)

    def _full_depth(self, images: torch.Tensor) -> torch.Tensor:
        return self.depth(images)[0]

    def _motion(self, tgt: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        return self.pose(tgt, src).src_T_tgt

    def _chunked(self, fn, *xs: torch.Tensor) -> torch.Tensor:
        k = self.checkpoint_frames
        if k <= 0 or not torch.is_grad_enabled():
            return fn(*xs)
        from torch.utils.checkpoint import checkpoint

        n = xs[0].shape[0]
        return torch.cat([checkpoint(fn, *(x[i:i + k] for x in xs), use_reentrant=False)
                          for i in range(0, n, k)])

    def forward(self, images: torch.Tensor, pairs: torch.Tensor | None = None):
        """images (B, F, 3, H, W) -> depth (B, F, 1, H, W) mm, consecutive motions
        ``(f+1)_T_f`` (B, F-1, 4, 4) and, for ``pairs`` (B, P, 2) of (target, source) frame
        indices, PoseNet's ``source_T_target`` (B, P, 4, 4) (else None)."""
        if images.dim() != 5 or images.shape[1] < 2:
            raise ValueError(f"SfmNets: expected (B, F >= 2, 3, H, W), got {tuple(images.shape)}")
        B, Fn = images.shape[:2]
        depth = self._chunked(self._full_depth, images.flatten(0, 1)).unflatten(0, (B, Fn))
        tgt = images[:, :-1].flatten(0, 1)
        src = images[:, 1:].flatten(0, 1)
        rel = self._chunked(self._motion, tgt, src).unflatten(0, (B, Fn - 1))
        extra = None
        if pairs is not None and pairs.shape[1] > 0:
            b = torch.arange(B, device=images.device)[:, None].expand_as(pairs[..., 0])
            extra = self._chunked(self._motion, images[b, pairs[..., 0]].flatten(0, 1),
                                  images[b, pairs[..., 1]].flatten(0, 1))
            extra = extra.unflatten(0, pairs.shape[:2])
        return depth, rel, extra


def chain_poses(rel: torch.Tensor) -> torch.Tensor:
    """Consecutive motions ``(f+1)_T_f`` (B, F-1, 4, 4) -> ``cam_T_world`` (B, F, 4, 4) with
    the world frame = camera 0 (``cam_T_world[:, 0] = I``)."""
    B, P = rel.shape[:2]
    T = [torch.eye(4, dtype=rel.dtype, device=rel.device).expand(B, 4, 4)]
    for f in range(P):
        T.append(rel[:, f] @ T[-1])
    return torch.stack(T, 1)


def consecutive_pairs(num_frames: int, device=None) -> torch.Tensor:
    """(2 (F-1), 2) (target, source) pairs of neighbouring frames, both directions."""
    a = torch.arange(num_frames - 1, device=device)
    fwd = torch.stack([a, a + 1], 1)
    return torch.cat([fwd, fwd.flip(1)], 0)


def inputs_from_sample(
    sample: SequenceSample, detector: LandmarkNet | None, source: str, min_visibility: float = 0.5
) -> SfmInputs:
    """Build the loss inputs of a batch (B, F, ...); landmarks from the frozen ``detector``
    (weights: visibility probability x inverse variance, zero below ``min_visibility`` or
    outside the image) or from the labels (``source="gt"``: weight = visible)."""
    images = sample.images
    B, Fn, _, H, W = images.shape
    if source == "gt":
        uv = sample.uv
        weight = sample.visible.to(images.dtype)
    else:
        if detector is None:
            raise InputError(
                "stage 2 needs a landmark detector: pass --landmarks-ckpt "
                "(a stage-1 checkpoint) or set sfm.landmark_source: gt"
            )
        with torch.no_grad():
            out = detector(images.flatten(0, 1))
            # the nested ordering: a detector of more landmarks gives the first N of them
            N = sample.uv.shape[-2]
            uv = out.uv.unflatten(0, (B, Fn))[:, :, :N]
            prob = torch.sigmoid(out.visibility_logits).unflatten(0, (B, Fn))[:, :, :N]
            weight = ba_weights(out).unflatten(0, (B, Fn))[:, :, :N] * (prob >= min_visibility)
            inside = (
                (uv[..., 0] >= 0)
                & (uv[..., 0] <= W - 1)
                & (uv[..., 1] >= 0)
                & (uv[..., 1] <= H - 1)
            )
            weight = weight * inside
            # relative weights: the BA and the loss normalise, keep them O(1)
            weight = weight / weight.amax((1, 2), keepdim=True).clamp_min(1e-12)
    return SfmInputs(images=images, mask=sample.mask, K=sample.K, uv=uv, weight=weight)


def motion_distillation(learned: torch.Tensor, refined: torch.Tensor,
                        eps: float = 1e-6) -> torch.Tensor:
    """Distance between the consecutive motions ``(f+1)_T_f`` of two pose chains
    (B, F, 4, 4): chordal rotation distance (``||R_a - R_b||_F``, about sqrt(2) x the angle
    in radians) plus the translation difference relative to the mean refined step length.

    With the BA layer on, the refined poses (detached) teach PoseNet: eq. 2 of the learned
    poses alone is a weak signal when the camera orbits the head, because a pose that does not
    move at all keeps the face where it is in the image and reprojects its landmarks within a
    few pixels (measured: PoseNet stayed 60 degrees off while that loss read 2.8 px).
    """
    B, Fn = learned.shape[:2]
    f = torch.arange(Fn - 1, device=learned.device)
    pairs = torch.stack([f, f + 1], -1).expand(B, Fn - 1, 2)
    return pair_distillation(learned[:, 1:] @ invert_pose(learned[:, :-1]), pairs, refined, eps)


def random_pairs(batch: int, num_frames: int, count: int, max_gap: int = 2,
                 device=None) -> torch.Tensor:
    """(batch, count, 2) ordered (target, source) frame pairs at most ``max_gap`` frames
    apart, in either direction, drawn uniformly from torch's global RNG (so a resumed run
    draws the same ones)."""
    f = torch.arange(num_frames)
    d = (f[:, None] - f[None, :]).abs()
    table = torch.nonzero((d >= 1) & (d <= max(1, max_gap)))  # all allowed (target, source)
    return table[torch.randint(len(table), (batch, count))].to(device)


def pair_distillation(pred: torch.Tensor, pairs: torch.Tensor, refined: torch.Tensor,
                      eps: float = 1e-6) -> torch.Tensor:
    """:func:`motion_distillation` for PoseNet's motions ``pred`` (B, P, 4, 4) between the
    frame ``pairs`` (B, P, 2) (target, source), against the refined poses (B, F, 4, 4): the
    same chordal rotation distance plus translation difference relative to the mean refined
    consecutive step."""
    b = torch.arange(pairs.shape[0], device=pairs.device)[:, None].expand_as(pairs[..., 0])
    target = refined[b, pairs[..., 1]] @ invert_pose(refined[b, pairs[..., 0]])
    rot = torch.sqrt(((pred[..., :3, :3] - target[..., :3, :3]) ** 2).sum((-1, -2)) + eps**2) - eps
    steps = (refined[:, 1:] @ invert_pose(refined[:, :-1]))[..., :3, 3]
    step = steps.norm(dim=-1).mean().clamp_min(1e-3)
    tr = (pred[..., :3, 3] - target[..., :3, 3]).norm(dim=-1) / step
    return (rot + tr).mean()


def landmark_depths(depth: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """(B, F, N) depth maps (B, F, 1, H, W) sampled at the landmarks uv (B, F, N, 2)."""
    B, Fn = uv.shape[:2]
    return sample_depth_at(depth.flatten(0, 1), uv.flatten(0, 1)).unflatten(0, (B, Fn))


def sfm_losses(
    inp: SfmInputs, depth: torch.Tensor, poses: torch.Tensor, learned: torch.Tensor, w: LossWeights,
    lm_depth: torch.Tensor | None = None, checkpoint_pairs: int = 0,
    pair_motions: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted stage-2 loss.

    depth: (B, F, 1, H, W) mm; poses: (B, F, 4, 4) ``cam_T_world`` used by the geometric terms
    (refined, or learned when the BA layer is off); learned: (B, F, 4, 4) the PoseNet chain
    (pose distillation); lm_depth: (B, F, N) depth at the landmarks if the caller has it
    already (the BA layer samples it). Terms with weight 0 are not computed.
    checkpoint_pairs: > 0 computes the spectral term over chunks of this many frame pairs
    under activation checkpointing (the same value; its SSIM and warp intermediates are
    recomputed in the backward pass instead of kept).
    pair_motions: (pairs (B, P, 2), PoseNet's motions between them (B, P, 4, 4)): with the BA
    layer on, PoseNet is also distilled on these pairs (see ``sfm.pose_distill_pairs``); the
    term is the mean of the consecutive and the pair distillation.
    """
    B, Fn, _, _H, _W = inp.images.shape
    metrics: dict[str, torch.Tensor] = {}
    total = depth.new_zeros(())
    K_f = inp.K[:, None].expand(B, Fn, 3, 3)
    if w.landmark > 0 or w.pose_distill > 0:
        if lm_depth is None:
            lm_depth = landmark_depths(depth, inp.uv)
        # No BA layer: eq. 2 of the learned poses is both the landmark term and PoseNet's
        # distillation term (the latter with the depth detached). One evaluation serves both:
        # the depth gets the landmark weight's share of the gradient, the poses all of it.
        shared = poses is learned and w.landmark > 0 and w.pose_distill > 0
        if w.landmark > 0:
            d = lm_depth
            if shared:
                share = w.landmark / (w.landmark + w.pose_distill)
                d = lm_depth.detach() + share * (lm_depth - lm_depth.detach())
            l, m = landmark_ba_loss(K_f, poses, inp.uv, inp.weight, d)
            total = total + (w.landmark + w.pose_distill if shared else w.landmark) * l
            metrics["landmark"] = l.detach()
            metrics["landmark_rmse_px"] = m["rmse_px"]
            if shared:
                metrics["pose_distill"] = l.detach()
        if w.pose_distill > 0 and not shared:
            if poses is learned:  # no BA layer: eq. 2 of the learned poses is all there is
                l, _ = landmark_ba_loss(K_f, learned, inp.uv, inp.weight, lm_depth.detach())
                total = total + w.pose_distill * l
            else:
                l = motion_distillation(learned, poses.detach())
                if pair_motions is not None:
                    pairs, pred = pair_motions
                    l = 0.5 * (l + pair_distillation(pred, pairs, poses.detach()))
                total = total + w.pose_distill_motion * l
            metrics["pose_distill"] = l.detach()
    if w.spectral > 0 or w.depth > 0:
        pairs = consecutive_pairs(Fn, device=depth.device)
        t, s = pairs[:, 0], pairs[:, 1]
        src_T_tgt = (poses[:, s] @ invert_pose(poses[:, t])).flatten(0, 1)
        tgt_img, src_img = inp.images[:, t].flatten(0, 1), inp.images[:, s].flatten(0, 1)
        tgt_d, src_d = depth[:, t].flatten(0, 1), depth[:, s].flatten(0, 1)
        tgt_m, src_m = inp.mask[:, t].flatten(0, 1), inp.mask[:, s].flatten(0, 1)
        Kp = inp.K[:, None].expand(B, len(pairs), 3, 3).flatten(0, 1)
        if w.spectral > 0:
            l, m = _spectral_term(tgt_img, src_img, tgt_d, src_T_tgt, Kp, tgt_m, src_m,
                                  checkpoint_pairs)
            total = total + w.spectral * l
            metrics["spectral"] = l.detach()
            metrics["spectral_valid"] = m["valid_fraction"]
        if w.depth > 0:
            l, _ = depth_consistency_loss(tgt_d, src_d, src_T_tgt, Kp, tgt_m, src_m)
            total = total + w.depth * l
            metrics["depth_consistency"] = l.detach()
    if w.smooth > 0:
        l, _ = smoothness_loss(
            depth.flatten(0, 1), inp.images.flatten(0, 1), inp.mask.flatten(0, 1)
        )
        total = total + w.smooth * l
        metrics["smooth"] = l.detach()
    return total, metrics


def _spectral_term(tgt_img, src_img, tgt_d, src_T_tgt, K, tgt_m, src_m, chunk: int):
    """:func:`view_synthesis_loss` over all pairs, in checkpointed chunks when ``chunk`` > 0
    and gradients are on. Its value is a masked mean, sum / max(mask sum, 1), so each chunk
    returns its sum and mask sum and the totals are combined the same way."""
    n = tgt_img.shape[0]
    if chunk <= 0 or not torch.is_grad_enabled() or chunk >= n:
        return view_synthesis_loss(tgt_img, src_img, tgt_d, src_T_tgt, K, tgt_m, src_m)
    from torch.utils.checkpoint import checkpoint

    def part(*xs):
        loss, m = view_synthesis_loss(*xs)
        mass = m["valid_fraction"] * xs[0][:, :1].numel()
        return loss * mass.clamp_min(1.0), mass

    sums, masses = [], []
    for i in range(0, n, chunk):
        sl = slice(i, i + chunk)
        total, mass = checkpoint(part, tgt_img[sl], src_img[sl], tgt_d[sl], src_T_tgt[sl],
                                 K[sl], tgt_m[sl], src_m[sl], use_reentrant=False)
        sums.append(total)
        masses.append(mass)
    mass = torch.stack(masses).sum()
    loss = torch.stack(sums).sum() / mass.clamp_min(1.0)
    return loss, {"valid_fraction": (mass / (n * tgt_img[:1, :1].numel())).detach()}


def build_sfm_nets(cfg: TrainConfig) -> SfmNets:
    s = cfg.sfm
    return SfmNets(
        DepthNetConfig(
            channels=tuple(s.depth_channels),
            num_scales=1,
            min_depth_mm=s.min_depth_mm,
            max_depth_mm=s.max_depth_mm,
        ),
        PoseNetConfig(channels=tuple(s.pose_channels), use_norm=s.pose_norm,
                      difference_input=s.pose_difference),
        checkpoint_frames=s.checkpoint_frames,
    )


class SfmTask:
    """Stage-2 task for :func:`facesfm.training.loop.run_training`."""

    stage = "sfm"

    def __init__(self, cfg: TrainConfig, detector: LandmarkNet | None = None):
        self.cfg = cfg
        self.detector = detector
        self.model = build_sfm_nets(cfg)
        s = cfg.sfm
        self.weights = s.effective_weights()
        self.use_ba = s.ba_active()
        needs_lm = self.use_ba or self.weights.landmark > 0 or self.weights.pose_distill > 0
        self.needs_landmarks = needs_lm
        if needs_lm and s.landmark_source == "detector" and detector is None:
            raise InputError(
                "stage 2 needs a landmark detector: pass --landmarks-ckpt "
                "(a stage-1 checkpoint) or set sfm.landmark_source: gt"
            )
        if detector is not None and detector.cfg.num_landmarks < cfg.data.landmarks:
            raise InputError(
                f"the detector finds {detector.cfg.num_landmarks} landmarks but "
                f"data.landmarks is {cfg.data.landmarks} (use at most that many)"
            )

    def inputs(self, sample: SequenceSample) -> SfmInputs:
        if not self.needs_landmarks:
            B, Fn = sample.images.shape[:2]
            z = sample.images.new_zeros(B, Fn, 0)
            return SfmInputs(
                sample.images, sample.mask, sample.K, z[..., None].expand(B, Fn, 0, 2), z
            )
        return inputs_from_sample(
            sample, self.detector, self.cfg.sfm.landmark_source, self.cfg.sfm.min_visibility
        )

    def forward(self, model, inp: SfmInputs, grad_ba: bool = True,
                pairs: torch.Tensor | None = None):
        """Depth, refined poses, learned poses, BA metrics, the depth at the landmarks
        (B, F, N) when the BA layer sampled it (else None), and PoseNet's motions between the
        frame ``pairs`` (B, P, 2) when given (else None)."""
        depth, rel, extra = model(inp.images, pairs)
        learned = chain_poses(rel)
        metrics: dict[str, torch.Tensor] = {}
        poses, lm_depth = learned, None
        if self.use_ba:
            lm_depth = landmark_depths(depth, inp.uv)
            ba = self.cfg.sfm.ba if grad_ba else _no_grad_ba(self.cfg.sfm.ba)
            start = learned
            if self.cfg.sfm.ba_init == "landmarks":
                start = factorised_poses(inp.K, inp.uv, inp.weight, learned)
            poses, metrics = refine_poses(inp.K, inp.uv, inp.weight, lm_depth, start, ba)
        return depth, poses, learned, metrics, lm_depth, extra

    def loss(self, model, batch: SequenceSample):
        inp = self.inputs(batch)
        pairs = None
        k = self.cfg.sfm.pose_distill_pairs
        if (self.use_ba and k > 0 and self.weights.pose_distill > 0
                and self.weights.pose_distill_motion > 0):  # the pair distillation is on
            B, Fn = inp.images.shape[:2]
            pairs = random_pairs(B, Fn, k, device=inp.images.device)
        depth, poses, learned, ba_metrics, lm_depth, extra = self.forward(model, inp, pairs=pairs)
        pair_motions = None if extra is None else (pairs, extra)
        loss, metrics = sfm_losses(inp, depth, poses, learned, self.weights, lm_depth,
                                   self.cfg.sfm.checkpoint_frames, pair_motions)
        return loss, {**metrics, **ba_metrics}

    def validate(self, model, samples: list[SequenceSample]) -> dict[str, float]:
        rows: list[dict[str, float]] = []
        rot, rot_learned = [], []
        for s in samples:
            batch = _as_batch(s)
            inp = self.inputs(batch)
            depth, poses, learned, _, _, _ = self.forward(model, inp, grad_ba=False)
            rows.append(depth_errors(depth[0], batch.depth[0], batch.mask[0]))
            rot.append(relative_rotation_errors(poses[0], batch.cam_T_world[0]))
            rot_learned.append(relative_rotation_errors(learned[0], batch.cam_T_world[0]))
        out = {k: float(torch.tensor([r[k] for r in rows]).nanmean()) for k in rows[0]}
        out["rot_err_deg"] = float(torch.cat(rot).mean())
        out["rot_err_learned_deg"] = float(torch.cat(rot_learned).mean())
        return out


def _no_grad_ba(ba: BAConfig) -> BAConfig:
    import dataclasses

    return dataclasses.replace(ba, backward=BackwardMode.NONE)


def _as_batch(s: SequenceSample) -> SequenceSample:
    return collate_samples([s])


def sfm_datasets(cfg: TrainConfig, data, val=None):
    """Windowed training samples (augmented) and validation windows (not augmented)."""
    d = cfg.data
    train = SequenceDataset(
        data,
        window=d.window,
        stride=d.stride,
        frame_step=d.frame_step,
        frame_step_max=d.frame_step_max,
        image_size=d.image_size,
        augment=AugmentConfig(reverse=d.reverse) if d.augment else None,
        landmarks=d.landmarks,
        seed=cfg.seed,
    )
    vset = SequenceDataset(
        val if val is not None else data,
        window=d.window,
        stride=d.stride,
        frame_step=d.frame_step,
        frame_step_max=d.frame_step_max,
        image_size=d.image_size,
        landmarks=d.landmarks,
    )
    return train, vset


def train_sfm(
    cfg: TrainConfig,
    data,
    out,
    *,
    landmarks_ckpt: str | Path | None = None,
    val=None,
    resume: bool = False,
    progress: bool = True,
    dist: DistInfo | None = None,
    interrupt_after: int | None = None,
    echo: Callable = print,
) -> TrainResult:
    """Train depth and pose networks on sequences ``data`` (no depth/pose supervision)."""
    detector = None
    if landmarks_ckpt is not None:
        detector, _ = load_landmark_net(landmarks_ckpt)
    seed_everything(cfg.seed)
    task = SfmTask(cfg, detector)
    train, vset = sfm_datasets(cfg, data, val)
    return run_training(
        task,
        cfg,
        train,
        vset,
        out,
        resume=resume,
        progress=progress,
        dist=dist,
        interrupt_after=interrupt_after,
        echo=echo,
        extra={"landmarks_ckpt": None if landmarks_ckpt is None else str(landmarks_ckpt)},
    )

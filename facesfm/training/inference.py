"""Trained networks at inference: load them from training checkpoints and run them on frames
(the learned stages of ``facesfm solve``, and the evaluation of detectors and depth).

Checkpoints are the ones ``facesfm train`` writes (:mod:`facesfm.training.checkpoint`):

* ``--landmark-checkpoint``: a stage "landmarks" checkpoint (model = the LandmarkNet);
* ``--checkpoint``: a stage "sfm" checkpoint (model = ``SfmNets``: DepthNet + PoseNet).

Each holds its TrainConfig; the networks run at its ``data.image_size`` (square). Frames are
resized to it; landmark pixels and depth maps are mapped back to the input resolution (pixel
centres: u_in = (u_net + 0.5) * W_in / W_net - 0.5). Poses, as in training: PoseNet on
consecutive frames gives ``(f+1)_T_f``, chained into ``cam_T_world`` with the world = the
first frame's camera (:func:`facesfm.training.sfm.chain_poses`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facesfm.config import from_dict
from facesfm.errors import InputError
from facesfm.networks import ba_weights, detect_landmarks
from facesfm.training.checkpoint import load_checkpoint, restore_weights
from facesfm.training.config import TrainConfig
from facesfm.training.landmarks import build_landmark_net
from facesfm.training.sfm import build_sfm_nets, chain_poses

__all__ = ["Networks", "load_networks", "run_depth", "run_landmarks", "run_poses"]


@dataclass
class Networks:
    """Networks in eval mode (None where that stage is an oracle) and their input sizes
    (W, H)."""

    landmark: torch.nn.Module | None
    depth: torch.nn.Module | None
    pose: torch.nn.Module | None
    landmark_size: tuple[int, int] | None
    sfm_size: tuple[int, int] | None
    landmark_crop: float | None = None  # face-crop refinement margin (None: one pass)
    pose_step: int = 1  # frames apart of the pairs PoseNet was trained on (data.frame_step)
    landmark_views: int = 1  # crops fused in the face-crop pass (landmarks.crop_views)


def _load(path, stage: str):
    path = Path(path)
    ck = load_checkpoint(path, stage=stage)  # InputError: missing, unreadable, wrong stage
    try:
        cfg = from_dict(TrainConfig, ck["config"], f"{path} config")
        state = ck["models"]["model"]
    except (KeyError, TypeError) as e:
        raise InputError(f"checkpoint {path}: malformed ({type(e).__name__}: {e})") from None
    return cfg, state


def recorded_detector(checkpoint) -> Path | None:
    """The landmark checkpoint an sfm checkpoint was trained with (``extra.landmarks_ckpt``,
    written by ``facesfm train sfm``; a relative path is looked up beside ``checkpoint`` first,
    as the shipped weights record it, then from the working directory), if recorded and on
    disk; else None."""
    ck = load_checkpoint(checkpoint, stage="sfm")
    rec = (ck.get("extra") or {}).get("landmarks_ckpt")
    if not rec:
        return None
    rec = Path(rec)
    cands = [rec] if rec.is_absolute() else [Path(checkpoint).parent / rec, rec]
    for cand in cands:
        if cand.is_file():
            return cand
    return None


def load_networks(checkpoint=None, landmark_checkpoint=None,
                  device: str | torch.device = "cpu") -> Networks:
    """Load the sfm (depth + pose) and/or landmark networks; InputError naming the file when
    it is missing, unreadable, of the wrong stage or its weights do not fit."""
    lm = dp = ps = None
    lsize = ssize = crop = None
    step = views = 1
    if landmark_checkpoint is not None:
        cfg, state = _load(landmark_checkpoint, "landmarks")
        lm = restore_weights(build_landmark_net(cfg), state, landmark_checkpoint,
                             "landmark network").to(device)
        lsize = (cfg.data.image_size, cfg.data.image_size)
        crop = cfg.landmarks.crop_margin if cfg.landmarks.face_crop > 0 else None
        views = cfg.landmarks.crop_views
    if checkpoint is not None:
        cfg, state = _load(checkpoint, "sfm")
        nets = restore_weights(build_sfm_nets(cfg), state, checkpoint, "depth/pose networks")
        nets = nets.to(device)
        dp, ps = nets.depth, nets.pose
        ssize = (cfg.data.image_size, cfg.data.image_size)
        step = cfg.data.frame_step
    return Networks(lm, dp, ps, lsize, ssize, crop, step, views)


def _batch(images: np.ndarray, size: tuple[int, int], device) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (F, 3, h, w) float32 in [0, 1] resized to size = (w, h)."""
    x = torch.as_tensor(images, device=device).permute(0, 3, 1, 2).float() / 255.0
    w, h = size
    if x.shape[-2:] != (h, w):
        x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear",
                                            align_corners=False, antialias=True)
    return x


def _param(net) -> torch.Tensor:
    return next(net.parameters())


@torch.no_grad()
def run_landmarks(nets: Networks, images: np.ndarray, batch: int = 8,
                  min_visibility: float = 0.5, crop_views: int | None = None):
    """Landmarks of every frame: (uv (F, N, 2) input pixels, weight (F, N) = BA weight where
    the visibility probability is >= ``min_visibility``, else 0). The detector sees the frames
    resized to its input size and, when it was trained on face crops, refines each detection
    in a crop resampled from the full-resolution frame
    (:func:`facesfm.networks.detect_landmarks`), fusing ``crop_views`` crops (default: the
    checkpoint's ``nets.landmark_views``)."""
    views = nets.landmark_views if crop_views is None else crop_views
    h = nets.landmark_size[1]
    w = nets.landmark_size[0]
    dev = _param(nets.landmark).device
    uvs, ws = [], []
    for i in range(0, len(images), batch):
        x = torch.as_tensor(images[i:i + batch], device=dev).permute(0, 3, 1, 2).float() / 255
        out = detect_landmarks(nets.landmark, x, (h, w), nets.landmark_crop, min_visibility,
                               crop_views=views)
        vis = torch.sigmoid(out.visibility_logits) >= min_visibility
        # log_sigma is in input pixels: the weights are inverse variances per input pixel^2
        ws.append((ba_weights(out) * vis).double().cpu().numpy())
        uvs.append(out.uv.double().cpu().numpy())
    return np.concatenate(uvs), np.concatenate(ws)


@torch.no_grad()
def run_depth(nets: Networks, images: np.ndarray, batch: int = 4) -> np.ndarray:
    """(F, H, W) float32 depth (mm) at the input resolution (finest output, resized)."""
    H, W = images.shape[1:3]
    dev = _param(nets.depth).device
    out = []
    for i in range(0, len(images), batch):
        d = nets.depth(_batch(images[i:i + batch], nets.sfm_size, dev))[0]
        if d.shape[-2:] != (H, W):
            d = torch.nn.functional.interpolate(d, size=(H, W), mode="bilinear",
                                                align_corners=False)
        out.append(d[:, 0].float().cpu().numpy())
    return np.concatenate(out)


@torch.no_grad()
def run_poses(nets: Networks, images: np.ndarray, batch: int = 8,
              step: int | None = None) -> np.ndarray:
    """(F, 4, 4) float64 cam_T_world (world = frame 0's camera) from PoseNet's relative poses.

    PoseNet is run on the motions it was trained on: keyframes ``step`` frames apart (default
    ``nets.pose_step``, the checkpoint's ``data.frame_step``) are chained pair by pair, and
    every frame between two keyframes is placed by PoseNet from the keyframe before it. With
    step 1 every frame is a keyframe (consecutive pairs chained).
    """
    step = max(1, int(step or nets.pose_step))
    dev = _param(nets.pose).device
    x = _batch(images, nets.sfm_size, dev)
    F = len(images)

    def motions(tgt: list[int], src: list[int]) -> torch.Tensor:
        out = []
        for i in range(0, len(tgt), batch):
            t, s = tgt[i:i + batch], src[i:i + batch]
            out.append(nets.pose(x[t], x[s]).src_T_tgt.double())
        return torch.cat(out) if out else torch.zeros(0, 4, 4, dtype=torch.float64)

    keys = list(range(0, F, step))
    T = torch.zeros(F, 4, 4, dtype=torch.float64)
    T[keys] = chain_poses(motions(keys[:-1], keys[1:])[None])[0].cpu()
    rest = [j for j in range(F) if j % step]
    if rest:
        base = [j - j % step for j in rest]
        T[rest] = motions(base, rest).cpu() @ T[base]
    return T.numpy()

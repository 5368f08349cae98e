"""Held-out accuracy of the stage-2 depth and pose networks, the way ``facesfm solve`` runs them.

Each frame goes through :func:`facesfm.training.inference.run_depth` (the network at its training
resolution, resized back to the frame) and every consecutive pair through
:func:`facesfm.training.inference.run_poses`. Errors are measured against the rendered ground truth:

* depth: per-frame median-scaled error on the face pixels of the GT mask (the monocular scale
  is unobservable), in mm and relative, averaged over frames
  (:func:`facesfm.training.metrics.depth_errors`); beside it, the same error of a flat depth
  (a constant map), the figure an untrained network scores;
* pose: the rotation error of PoseNet's relative pose between consecutive frames of the set
  (so render the set with the spacing the network was trained on, e.g. 11 frames over 120
  degrees for pairs 12 degrees apart), and of the chained poses relative to frame 0, averaged
  over frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facesfm.data.dataset import find_sequences
from facesfm.data.format import load_sequence
from facesfm.eval.metrics import rotation_angle_deg
from facesfm.training.inference import load_networks, run_depth, run_poses
from facesfm.training.metrics import depth_errors, relative_rotation_errors

__all__ = ["sfm_errors"]


def _pair_rotation_errors(est: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(F-1,) degrees between consecutive relative rotations of two (F, 4, 4) cam_T_world."""
    def rel(T):
        R = T[:, :3, :3]
        return R[1:] @ np.swapaxes(R[:-1], 1, 2)

    d = rel(est) @ np.swapaxes(rel(gt), 1, 2)
    return rotation_angle_deg(d)


@torch.no_grad()
def sfm_errors(checkpoint: str | Path, data: str | Path) -> dict:
    """Depth and pose errors of the stage-2 ``checkpoint`` on every frame of the sequences in
    ``data`` (a dataset or sequence folders with GT depth, masks and poses).

    Returns ``depth_mm``, ``depth_abs_rel`` (median-scaled, face pixels), ``flat_depth_mm``,
    ``flat_depth_abs_rel`` (a constant depth, same protocol), ``pose_pair_rot_deg`` (mean over
    consecutive pairs), ``pose_chain_rot_deg`` (mean over frames 1.. of the chained poses
    relative to frame 0), ``gt_pair_rot_deg`` (the mean GT rotation between consecutive frames:
    the pair error of a network that predicts no motion) and the counts of sequences and
    frames.
    """
    nets = load_networks(checkpoint=checkpoint)
    dep, flat, pair, chain, motion = [], [], [], [], []
    frames = 0
    seqs = find_sequences(data)
    for path in seqs:
        seq = load_sequence(path)
        images = np.stack([seq.image(i) for i in range(len(seq))])
        gt = torch.from_numpy(np.stack([seq.depth(i) for i in range(len(seq))]))[:, None]
        mask = torch.from_numpy(np.stack([seq.mask(i) for i in range(len(seq))]))[:, None]
        pred = torch.from_numpy(run_depth(nets, images))[:, None]
        n = len(seq)
        dep.append((depth_errors(pred, gt, mask), n))
        flat.append((depth_errors(torch.ones_like(gt), gt, mask), n))
        est = run_poses(nets, images, step=1)  # the set's own frame spacing
        pair.append(_pair_rotation_errors(est, seq.cam_T_world))
        still = np.broadcast_to(np.eye(4), seq.cam_T_world.shape)
        motion.append(_pair_rotation_errors(still, seq.cam_T_world))  # GT motion per pair
        chain.append(relative_rotation_errors(torch.from_numpy(est),
                                              torch.from_numpy(seq.cam_T_world)).numpy())
        frames += n

    def wmean(rows, key):
        return float(sum(r[key] * n for r, n in rows) / sum(n for _, n in rows))

    return {
        "depth_mm": wmean(dep, "depth_mm"),
        "depth_abs_rel": wmean(dep, "depth_abs_rel"),
        "flat_depth_mm": wmean(flat, "depth_mm"),
        "flat_depth_abs_rel": wmean(flat, "depth_abs_rel"),
        "pose_pair_rot_deg": float(np.concatenate(pair).mean()),
        "pose_chain_rot_deg": float(np.concatenate(chain).mean()),
        "gt_pair_rot_deg": float(np.concatenate(motion).mean()),
        "sequences": len(seqs),
        "frames": frames,
    }

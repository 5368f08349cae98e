"""The learned stages of ``facesfm solve``: networks from a checkpoint, run on a frame set.

Checkpoint format (what the training code is expected to write; ``torch.save`` of a dict)::

    {"format": "facesfm-checkpoint", "version": 1,
     "image_size": [W, H],                  # network input size (multiples of 32)
     "landmark": {"config": LandmarkNetConfig as a dict, "state_dict": {...}},
     "depth":    {"config": DepthNetConfig as a dict,    "state_dict": {...}},
     "pose":     {"config": PoseNetConfig as a dict,     "state_dict": {...}}}

Frames are resized to ``image_size`` for the networks; landmark pixels and depth maps are
mapped back to the input resolution (pixel centres: u_in = (u_net + 0.5) * W_in / W_net - 0.5).
Poses: ``cam_T_world`` of frame k is ``PoseNet(frame_ref, frame_k).src_T_tgt`` (``k_T_ref``),
i.e. the world frame is the reference frame's camera.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facesfm.errors import InputError

__all__ = ["CHECKPOINT_FORMAT", "Networks", "load_checkpoint", "save_checkpoint",
           "run_landmarks", "run_depth", "run_poses"]

CHECKPOINT_FORMAT = "facesfm-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class Networks:
    """The three networks in eval mode and the input size (W, H) they run at."""

    landmark: torch.nn.Module
    depth: torch.nn.Module
    pose: torch.nn.Module
    image_size: tuple[int, int]
    path: Path


def save_checkpoint(path, landmark, depth, pose, image_size: tuple[int, int]) -> None:
    """Write networks in the format :func:`load_checkpoint` reads (atomic)."""
    from facesfm.config import to_dict
    from facesfm.io import atomic_path

    blob = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "image_size": [int(image_size[0]), int(image_size[1])]}
    for k, net in (("landmark", landmark), ("depth", depth), ("pose", pose)):
        blob[k] = {"config": to_dict(net.cfg), "state_dict": net.state_dict()}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load_checkpoint(path, device: str | torch.device = "cpu") -> Networks:
    """Load the three networks; InputError naming the file when it is missing, unreadable,
    not a facesfm checkpoint, of another version, or its weights do not fit the networks."""
    from facesfm.config import from_dict
    from facesfm.networks import (
        DepthNet,
        DepthNetConfig,
        LandmarkNet,
        LandmarkNetConfig,
        PoseNet,
        PoseNetConfig,
    )

    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises pickle/zip/runtime errors for foreign files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"checkpoint {path}: unreadable ({msg[:200]})") from None
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"checkpoint {path}: not a {CHECKPOINT_FORMAT} file")
    if blob.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"checkpoint {path}: version {blob.get('version')!r} is not supported "
                         f"(this facesfm reads version {CHECKPOINT_VERSION})")
    nets = {}
    for key, cls, cfg_cls in (("landmark", LandmarkNet, LandmarkNetConfig),
                              ("depth", DepthNet, DepthNetConfig),
                              ("pose", PoseNet, PoseNetConfig)):
        part = blob.get(key)
        if not isinstance(part, dict) or "config" not in part or "state_dict" not in part:
            raise InputError(f"checkpoint {path}: no {key} network (config + state_dict)")
        try:
            net = cls(from_dict(cfg_cls, part["config"], f"checkpoint {path}: {key} config"))
            net.load_state_dict(part["state_dict"])
        except InputError:
            raise
        except (RuntimeError, ValueError, TypeError) as e:
            first = str(e).splitlines()[0]
            raise InputError(f"checkpoint {path}: incompatible {key} network ({first[:200]})"
                             ) from None
        nets[key] = net.to(device).eval()
    try:
        W, H = (int(x) for x in blob["image_size"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"checkpoint {path}: image_size [W, H] missing or malformed") from None
    if W % 32 or H % 32 or W < 32 or H < 32:
        raise InputError(f"checkpoint {path}: image_size {W}x{H} must be multiples of 32")
    return Networks(nets["landmark"], nets["depth"], nets["pose"], (W, H), path)


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
def run_landmarks(nets: Networks, images: np.ndarray, batch: int = 8):
    """Landmarks of every frame: (uv (F, N, 2) input pixels, weight (F, N) = BA weight where
    the visibility probability is >= 0.5, else 0)."""
    from facesfm.networks import ba_weights

    H, W = images.shape[1:3]
    w, h = nets.image_size
    dev = _param(nets.landmark).device
    uvs, ws = [], []
    for i in range(0, len(images), batch):
        out = nets.landmark(_batch(images[i:i + batch], nets.image_size, dev))
        uv = out.uv.double().cpu().numpy()
        uv[..., 0] = (uv[..., 0] + 0.5) * W / w - 0.5
        uv[..., 1] = (uv[..., 1] + 0.5) * H / h - 0.5
        vis = torch.sigmoid(out.visibility_logits) >= 0.5
        ws.append((ba_weights(out) * vis).double().cpu().numpy())
        uvs.append(uv)
    return np.concatenate(uvs), np.concatenate(ws)


@torch.no_grad()
def run_depth(nets: Networks, images: np.ndarray, batch: int = 4) -> np.ndarray:
    """(F, H, W) float32 depth (mm) at the input resolution (finest output, resized)."""
    H, W = images.shape[1:3]
    dev = _param(nets.depth).device
    out = []
    for i in range(0, len(images), batch):
        d = nets.depth(_batch(images[i:i + batch], nets.image_size, dev))[0]
        if d.shape[-2:] != (H, W):
            d = torch.nn.functional.interpolate(d, size=(H, W), mode="bilinear",
                                                align_corners=False)
        out.append(d[:, 0].float().cpu().numpy())
    return np.concatenate(out)


@torch.no_grad()
def run_poses(nets: Networks, images: np.ndarray, reference: int = 0,
              batch: int = 8) -> np.ndarray:
    """(F, 4, 4) float64 cam_T_world with the world = the reference frame's camera."""
    dev = _param(nets.pose).device
    x = _batch(images, nets.image_size, dev)
    F = len(images)
    T = np.zeros((F, 4, 4))
    for i in range(0, F, batch):
        src = x[i:i + batch]
        tgt = x[reference:reference + 1].expand_as(src)
        T[i:i + batch] = nets.pose(tgt, src).src_T_tgt.double().cpu().numpy()
    T[reference] = np.eye(4)
    return T

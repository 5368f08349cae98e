"""The camera file of a solve, ``cameras.json`` (format "facesfm-cameras", version 1)::

    {"format", "version", "units": "mm", "convention": ..., "width", "height",
     "K": 3x3 OpenCV intrinsics, "initial_source": how the initial poses were obtained,
     "frames": [{"name", "input_index",
                 "cam_T_world_initial":   4x4 (learned, or the oracle/perturbed start),
                 "cam_T_world_optimised": 4x4 (after BA),
                 "cam_T_world_gt":        4x4 (only for sequence input),
                 "depth_scale", "reprojection_initial_px", "reprojection_optimised_px"}]}

Convention: OpenCV camera axes (x right, y down, z forward); ``cam_T_world`` maps world
points to the camera, ``X_cam = R X_world + t`` (mm); the pixel centre of (row r, col c) is
at uv = (c, r). Poses without GT live in the frame of the first usable camera.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesfm.errors import InputError
from facesfm.io import read_json, write_json

__all__ = [
    "CAMERAS_FORMAT",
    "CONVENTION",
    "Cameras",
    "check_solved_from",
    "read_cameras",
    "write_cameras",
]

CAMERAS_FORMAT = "facesfm-cameras"
CAMERAS_VERSION = 1
CONVENTION = ("OpenCV camera (x right, y down, z forward); cam_T_world maps world points to "
              "the camera: X_cam = R X_world + t, millimetres; pixel centre of (row r, col c) "
              "at uv = (c, r)")


@dataclass(frozen=True)
class Cameras:
    """Contents of cameras.json. initial, optimised: (F, 4, 4); gt: (F, 4, 4) or None;
    K (3, 3); names F; input_index (F,); depth_scale (F,)."""

    K: np.ndarray
    width: int
    height: int
    names: tuple[str, ...]
    input_index: np.ndarray
    initial: np.ndarray
    optimised: np.ndarray
    gt: np.ndarray | None
    depth_scale: np.ndarray
    initial_source: str
    path: Path | None = None


def write_cameras(path, cams: Cameras, extra_per_frame: list[dict] | None = None) -> None:
    """Write ``cams`` as cameras.json (atomic)."""
    frames = []
    for i, name in enumerate(cams.names):
        fr = {"name": name, "input_index": int(cams.input_index[i]),
              "cam_T_world_initial": cams.initial[i].tolist(),
              "cam_T_world_optimised": cams.optimised[i].tolist()}
        if cams.gt is not None:
            fr["cam_T_world_gt"] = cams.gt[i].tolist()
        fr["depth_scale"] = float(cams.depth_scale[i])
        if extra_per_frame is not None:
            fr.update(extra_per_frame[i])
        frames.append(fr)
    write_json(path, {"format": CAMERAS_FORMAT, "version": CAMERAS_VERSION, "units": "mm",
                      "convention": CONVENTION, "width": int(cams.width),
                      "height": int(cams.height), "K": np.asarray(cams.K).tolist(),
                      "initial_source": cams.initial_source, "frames": frames})


def read_cameras(path) -> Cameras:
    """Read cameras.json (or a solve output folder holding one); InputError naming the file
    when it is missing or malformed."""
    path = Path(path)
    if path.is_dir():
        path = path / "cameras.json"
    if not path.is_file():
        raise InputError(f"cameras file not found: {path}")
    d = read_json(path)
    if not isinstance(d, dict) or d.get("format") != CAMERAS_FORMAT:
        raise InputError(f"{path}: not a {CAMERAS_FORMAT} file")
    if d.get("version") != CAMERAS_VERSION:
        raise InputError(f"{path}: version {d.get('version')!r} is not supported")
    try:
        frames = d["frames"]
        if not frames:
            raise ValueError("no frames")
        arr = lambda k: np.array([fr[k] for fr in frames], dtype=np.float64)
        initial, optimised = arr("cam_T_world_initial"), arr("cam_T_world_optimised")
        has_gt = all("cam_T_world_gt" in fr for fr in frames)
        gt = arr("cam_T_world_gt") if has_gt else None
        K = np.array(d["K"], dtype=np.float64)
        for a in (initial, optimised) + ((gt,) if gt is not None else ()):
            if a.shape != (len(frames), 4, 4) or not np.all(np.isfinite(a)):
                raise ValueError("poses must be finite 4x4 matrices")
        if K.shape != (3, 3):
            raise ValueError("K must be 3x3")
        return Cameras(K, int(d["width"]), int(d["height"]),
                       tuple(str(fr["name"]) for fr in frames),
                       np.array([int(fr["input_index"]) for fr in frames]), initial, optimised,
                       gt, np.array([float(fr.get("depth_scale", 1.0)) for fr in frames]),
                       str(d.get("initial_source", "")), path)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: malformed cameras file ({type(e).__name__}: {e})") from None


def check_solved_from(solve_dir: Path, seq, what: str) -> None:
    """InputError unless the solve in ``solve_dir`` ran on the frames of ``seq``: the digest
    of its input that report.json records (:func:`facesfm.data.format.frames_digest`) must
    be the sequence's. A folder without report.json, or a report from before the digest, is
    accepted as it is (nothing to check)."""
    rep = Path(solve_dir) / "report.json"
    if not rep.is_file():
        return
    try:
        recorded = json.loads(rep.read_text())["input"].get("sha256")
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{rep}: malformed ({type(e).__name__}: {e})") from None
    if recorded and recorded != seq.digest():
        raise InputError(f"{what}: its frames are not the ones {solve_dir} was solved from "
                         f"(the images differ from those recorded in {rep.name})")

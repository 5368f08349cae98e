"""What the benchmarks record beside their figures, and how they write them.

The scripts here run as ``python bench/<name>.py`` (this folder is then first on sys.path).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

from facesfm.io import atomic_path, write_json
from facesfm.training.checkpoint import code_version


def commit() -> str:
    """The short commit the benchmark ran at (+ "-dirty" with uncommitted changes)."""
    v = code_version()
    if not v.get("git"):
        return "unknown"
    return v["git"][:7] + ("-dirty" if v.get("dirty") else "")


def run_meta(**extra) -> dict:
    """Machine, software, commit, time and the 1-minute load average at the end of the run
    (other work sharing the cores shows there), plus the benchmark's own settings."""
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "commit": commit(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        **extra,
    }


def write_results(out: Path | str, stem: str, payload: dict, markdown: str) -> None:
    """``out/<stem>.json`` and ``out/<stem>.md``, each written atomically."""
    out = Path(out)
    write_json(out / f"{stem}.json", payload)
    with atomic_path(out / f"{stem}.md") as tmp:
        tmp.write_text(markdown)
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}")


def merge(a: dict, b: dict) -> dict:
    """``a`` with ``b``'s values on top, nested dicts merged key by key (config overrides)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def score_written_solve(out: Path, gt, capture_poses=None) -> dict:
    """A written ``facesfm solve`` folder ``out`` scored against the sequence ``gt`` it was
    made from, from its files alone (as a user's would be): report status and problems, the
    K used and where it came from, frames, mean rotation error after a similarity alignment,
    and the solve's own evaluation of the cloud (ICP with scale, and at the cameras' scale;
    completeness), its ICP started from the written cameras' similarity to the true ones.
    ``capture_poses`` (F, 4, 4): the true cameras of a capture whose cameras turned away from
    the sequence's (:func:`facesfm.render.composite.panned_capture`); the written cameras are
    turned back onto the sequence's for the cloud's evaluation."""
    import numpy as np
    import trimesh

    from facesfm.data.cameras import read_cameras
    from facesfm.eval.ground_truth import evaluate_against_gt
    from facesfm.eval.metrics import pose_errors
    from facesfm.io import read_json

    cams = read_cameras(out)
    truth = np.asarray(gt.cam_T_world if capture_poses is None else capture_poses)
    rot = pose_errors(cams.optimised, truth[cams.input_index], "sim3").summary()
    if capture_poses is not None:  # the turn of each capture camera from the sequence's
        back = np.asarray(gt.cam_T_world) @ np.linalg.inv(truth)
        cams = replace(cams, initial=back[cams.input_index] @ cams.initial,
                       optimised=back[cams.input_index] @ cams.optimised)
    kept = np.zeros(len(gt), dtype=bool)
    kept[cams.input_index] = True
    cloud = np.asarray(trimesh.load(out / "cloud.ply").vertices, dtype=np.float64)
    mesh = np.asarray(trimesh.load(out / "mesh.ply", process=False).vertices, dtype=np.float64)
    ev = evaluate_against_gt(gt, kept, cams.initial, cams.optimised, np.full((1, 3), np.nan),
                             np.zeros(1, dtype=np.int64), cloud, mesh)
    rep = read_json(out / "report.json")
    return {"status": rep["status"], "problems": rep.get("problems", []),
            "frames": len(cams.names), "focal_px": float(cams.K[0, 0]),
            "focal_source": rep["intrinsics"]["source"],
            "focal_estimate": rep["intrinsics"].get("focal_estimate"),
            "rotation_mean_deg": rot["rotation_mean_deg"],
            "cloud_mm": ev.cloud and ev.cloud.mean,
            "cloud_alignment_error": ev.errors.get("alignment"),
            "cloud_mm_fixed_scale": ev.cloud_landmark_scale and ev.cloud_landmark_scale.mean,
            "completeness": ev.completeness and ev.completeness.fraction,
            "face_shape_mm": rep.get("checks", {}).get("face_shape_mm")}


def num(x, fmt: str) -> str:
    """``x`` formatted, or "-" for None (a figure a case did not produce)."""
    return "-" if x is None else format(x, fmt)

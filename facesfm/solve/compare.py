"""``facesfm compare``: learned vs optimised camera poses per frame (and GT where known).

Per frame: the rotation error (deg) and the camera-centre error (mm) of the initial (learned)
and the optimised poses against the ground truth after a Sim3 gauge alignment
(:func:`facesfm.eval.metrics.pose_errors`), plus summaries (mean, max, ATE, RPE). Without
ground truth, the optimised poses are the reference and the table shows how far the learned
poses moved. Metrics come from :mod:`facesfm.eval.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesfm.data.cameras import Cameras, check_solved_from, read_cameras
from facesfm.data.format import load_sequence
from facesfm.errors import InputError
from facesfm.eval.metrics import pose_errors
from facesfm.io import atomic_path

__all__ = ["Comparison", "compare_cameras", "format_comparison", "plot_comparison"]


@dataclass(frozen=True)
class Comparison:
    """Per-frame errors. reference: "gt" or "optimised"; errors: {"initial": PoseErrors,
    "optimised": PoseErrors} (without GT only "initial", against the optimised poses)."""

    cameras: Cameras
    reference: str
    gauge: str
    errors: dict

    def summary(self) -> dict:
        return {"reference": self.reference, "gauge": self.gauge,
                **{k: e.summary() for k, e in self.errors.items()}}


def _gt_poses(gt, cams: Cameras) -> np.ndarray:
    seq = load_sequence(gt, check_files=False)
    idx = cams.input_index
    if len(idx) and (idx.max() >= len(seq) or idx.min() < 0):
        raise InputError(f"--gt {gt}: {len(seq)} frames, but the cameras file refers to input "
                         f"frame {int(idx.max())}")
    names = [p.name for p in seq.image_paths]
    if [names[i] for i in idx] != list(cams.names):
        raise InputError(f"--gt {gt}: frame names do not match {cams.path}")
    check_solved_from(cams.path.parent, seq, f"--gt {gt}")
    return seq.cam_T_world[idx]



def compare_cameras(path, gt=None, gauge: str | None = None) -> Comparison:
    """Compare the poses of cameras.json at ``path`` (file or solve output folder).

    gt:    a sequence folder with GT poses (default: the GT stored in cameras.json, if any).
    gauge: "sim3" (default with >= 3 frames), "first_frame_scaled" (default with 2).
    """
    cams = read_cameras(path)
    ref = _gt_poses(gt, cams) if gt is not None else cams.gt
    F = len(cams.names)
    gauge = gauge or ("sim3" if F >= 3 else "first_frame_scaled")
    try:
        if ref is not None:
            errs = {"initial": pose_errors(cams.initial, ref, gauge),
                    "optimised": pose_errors(cams.optimised, ref, gauge)}
            return Comparison(cams, "gt", gauge, errs)
        return Comparison(cams, "optimised", gauge,
                          {"initial": pose_errors(cams.initial, cams.optimised, gauge)})
    except ValueError as e:
        raise InputError(f"{cams.path}: cannot align the trajectories ({e})") from None


def format_comparison(c: Comparison) -> str:
    """A plain-text table, one row per frame, then the summary."""
    keys = list(c.errors)
    head = f"{'frame':>5} {'name':<20}"
    for k in keys:
        head += f" {k + ' rot(deg)':>18} {k + ' trans(mm)':>19}"
    lines = [f"reference: {c.reference} (gauge {c.gauge}); {len(c.cameras.names)} frames", head]
    for i, name in enumerate(c.cameras.names):
        row = f"{int(c.cameras.input_index[i]):>5} {name[:20]:<20}"
        for k in keys:
            e = c.errors[k]
            row += f" {e.rotation_deg[i]:>18.3f} {e.translation_mm[i]:>19.3f}"
        lines.append(row)
    for k in keys:
        s = c.errors[k].summary()
        lines.append(f"{k}: rotation mean {s['rotation_mean_deg']:.3f} deg "
                     f"(max {s['rotation_max_deg']:.3f}), translation mean "
                     f"{s['translation_mean_mm']:.3f} mm (max {s['translation_max_mm']:.3f}), "
                     f"ATE {s['ate_mm']:.3f} mm")
    return "\n".join(lines)


def plot_comparison(c: Comparison, path) -> Path:
    """Rotation and translation errors per frame as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    x = c.cameras.input_index
    for k, e in c.errors.items():
        axes[0].plot(x, e.rotation_deg, "o-", ms=3, label=k)
        axes[1].plot(x, e.translation_mm, "o-", ms=3, label=k)
    axes[0].set_ylabel("rotation error (deg)")
    axes[1].set_ylabel("camera centre error (mm)")
    for ax in axes:
        ax.set_xlabel("input frame")
        ax.legend(fontsize=8)
        ax.set_title(f"vs {c.reference}", fontsize=9)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path

"""Several solve settings ("methods") on the same held-out sequences, face by face, against
the ground truth: what bench/heldout.py tabulates.

A method is a named :class:`facesfm.solve.config.SolveConfig` (:func:`method_configs` holds
the ones the paper's comparison needs, as data). :func:`solve_methods` runs each on each
sequence with the solve's own evaluation (:func:`facesfm.eval.ground_truth.evaluate_against_gt`,
NoW included) and keeps a solve its checks refuse, with the reason, so that a table can say
how wrong the refused results were. :func:`summarise` gives the mean and median over faces of
each figure, the refused and failed solves left out of them and counted.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from facesfm.errors import InputError
from facesfm.eval.metrics import pose_errors
from facesfm.solve.config import SolveConfig
from facesfm.solve.fusion import FusionConfig
from facesfm.solve.pipeline import run_solve
from facesfm.solve.stereo import StereoConfig
from facesfm.solve.tracks import TrackConfig
from facesfm.solvers.baselines import run_baseline
from facesfm.solvers.landmark_ba import BAConfig

__all__ = ["BA_START", "COLMAP", "DETECTOR_ONLY", "METHOD_LABELS", "FaceRow", "MethodFigures",
           "method_configs", "solve_methods", "summarise"]

#: method key -> table label
METHOD_LABELS = {
    "full": "ours, full",
    "no_ba": "ours, without BA",
    "detector": "ours, detector only",
    "detector_cv4": "ours, detector only, --consistent-views 4",
    "detector_photo": "ours, detector only, --tracks --stereo",
    "detector_photo_person": "ours, detector only, --tracks --stereo --person-mask on",
    "full_photo": "ours, full, --tracks --stereo",
    "tk68": "factorisation, 68 landmarks",
}
DETECTOR_ONLY = METHOD_LABELS["detector"]
#: the rows that come with :data:`DETECTOR_ONLY`: its BA's start, and Ceres on its landmarks
BA_START = "BA start"
COLMAP = "COLMAP/Ceres, same landmarks"


def method_configs(landmark_checkpoint: str | Path, sfm_checkpoint: str | Path | None,
                   keys: Iterable[str]) -> dict[str, SolveConfig]:
    """{label: config} of the method ``keys`` (of :data:`METHOD_LABELS`), in their order; the
    network methods are left out without ``sfm_checkpoint``. Unknown keys raise InputError."""
    keys = list(keys)
    unknown = sorted(set(keys) - set(METHOD_LABELS))
    if unknown:
        raise InputError(f"unknown methods {unknown}; choose from {list(METHOD_LABELS)}")
    base = SolveConfig(landmark_checkpoint=str(landmark_checkpoint), poses_init="landmarks",
                       depth="landmarks")
    photo = {"tracks": TrackConfig(enabled=True), "stereo": StereoConfig(enabled=True)}
    cfgs = {
        "detector": base,
        "detector_photo": replace(base, **photo),
        "detector_photo_person": replace(base, **photo, person_mask="on"),
        "detector_cv4": replace(base, fusion=FusionConfig(consistent_views=4)),
        "tk68": replace(base, landmarks=68, ba=BAConfig(enabled=False)),
    }
    if sfm_checkpoint is not None:
        cfgs["full"] = replace(base, checkpoint=str(sfm_checkpoint), depth="network")
        cfgs["full_photo"] = replace(cfgs["full"], **photo)
        cfgs["no_ba"] = replace(base, checkpoint=str(sfm_checkpoint), depth="network",
                                poses_init="network", ba=BAConfig(enabled=False))
    return {METHOD_LABELS[k]: cfgs[k] for k in keys if k in cfgs}


def _figure(value, attr: str) -> float:
    return math.nan if value is None else float(getattr(value, attr))


@dataclass(frozen=True)
class MethodFigures:
    """One method on one face (mm, degrees, seconds; NaN where the evaluation has no figure).

    rot_deg: mean rotation error over frames after a similarity alignment of the trajectory;
    cloud_*: the fused cloud's distance to the GT surface after landmark + ICP alignment with a
    free scale (``cloud_ls_mean_mm``: rigid ICP at the landmarks' scale), and the ratio of the
    two alignments' scales; completeness: the seen GT surface within 2 mm of the cloud; now_*:
    the NoW protocol's median, with and without the landmarks' scale. refused: why the solve's
    checks would not write it; cloud_error: why the cloud could not be aligned.
    """

    rot_deg: float
    cloud_mean_mm: float = math.nan
    cloud_median_mm: float = math.nan
    cloud_ls_mean_mm: float = math.nan
    icp_scale_ratio: float = math.nan
    completeness: float = math.nan
    now_median_mm: float = math.nan
    now_metric_median_mm: float = math.nan
    seconds: float = math.nan
    motion_disagreement_deg: float | None = None
    face_shape_mm: float | None = None
    refused: str | None = None
    cloud_error: str | None = None

    @classmethod
    def of(cls, res, seconds: float) -> MethodFigures:
        """From a :class:`facesfm.solve.stages.SolveResult` evaluated against its GT."""
        ev = res.evaluation
        return cls(
            rot_deg=float(ev.poses_optimised.rotation_deg.mean()),
            cloud_mean_mm=_figure(ev.cloud, "mean"),
            cloud_median_mm=_figure(ev.cloud, "median"),
            cloud_ls_mean_mm=_figure(ev.cloud_landmark_scale, "mean"),
            icp_scale_ratio=_figure(ev.alignment, "scale")
            / _figure(ev.alignment_landmark_scale, "scale"),
            completeness=_figure(ev.completeness, "fraction"),
            now_median_mm=_figure(ev.now, "median_mm"),
            now_metric_median_mm=_figure(ev.now_metric, "median_mm"),
            seconds=seconds,
            motion_disagreement_deg=res.checks.motion_disagreement_deg,
            face_shape_mm=res.checks.face_shape_mm,
            refused="; ".join(res.problems) if res.problems else None,
            cloud_error=ev.errors.get("alignment"))

    def to_dict(self) -> dict:
        """The results file's form: the figures, and ``refused`` / ``cloud_error`` only where
        they apply."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("refused", "cloud_error") or v is not None}


#: the figures :func:`summarise` averages over faces
SUMMARY_FIGURES = ("rot_deg", "cloud_mean_mm", "cloud_median_mm", "cloud_ls_mean_mm",
                   "icp_scale_ratio", "completeness", "now_median_mm", "now_metric_median_mm",
                   "seconds")


@dataclass
class FaceRow:
    """All methods on one sequence: {label: figures, or the one-line error of a solve that
    failed}; with :data:`DETECTOR_ONLY`, also its BA's start and Ceres on the same landmarks
    (rotation only: {"rot_deg": ...} or {"error": ...})."""

    sequence: str
    results: dict[str, MethodFigures | str] = field(default_factory=dict)
    poses_only: dict[str, dict] = field(default_factory=dict)

    def figures(self, label: str) -> MethodFigures | None:
        """The method's figures where its solve finished (refused or not)."""
        r = self.results.get(label)
        return r if isinstance(r, MethodFigures) else None

    def to_dict(self) -> dict:
        out: dict = {"sequence": self.sequence}
        for label, r in self.results.items():
            out[label] = {"error": r} if isinstance(r, str) else r.to_dict()
        return out | self.poses_only

    def summary_line(self) -> str:
        parts = []
        for label, r in self.results.items():
            if isinstance(r, str):
                parts.append(f"{label} failed")
            else:
                parts.append(f"{label} {r.rot_deg:.2f} deg {r.cloud_mean_mm:.2f} mm")
        return f"{self.sequence}: " + "; ".join(parts)


def _poses_only_rows(res) -> dict[str, dict]:
    """The BA start of a solve, and Ceres (pycolmap) from the factorisation on its landmarks."""
    rows = {BA_START: {"rot_deg": float(res.evaluation.poses_initial.rotation_deg.mean())}}
    lm, gt = res.landmarks, res.poses_gt
    try:
        b = run_baseline("colmap_ba", lm.uv, lm.weight > 0, res.frames.K)
        ok = np.all(np.isfinite(b.cam_T_world.reshape(len(gt), -1)), 1)
        rows[COLMAP] = {"rot_deg": float(
            pose_errors(b.cam_T_world[ok], gt[ok], "sim3").rotation_deg.mean())}
    except Exception as e:  # noqa: BLE001 - a failed baseline is a table entry
        rows[COLMAP] = {"error": str(e)}
    return rows


def solve_methods(sequences: Iterable[Path], methods: dict[str, SolveConfig],
                  on_face: Callable[[int, FaceRow], None] | None = None) -> list[FaceRow]:
    """Each method's solve of each sequence (outputs in a temporary folder, removed), with its
    evaluation; ``on_face(i, row)`` after each sequence."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="facesfm-methods-") as tmp:
        for i, seq in enumerate(sequences):
            row = FaceRow(Path(seq).name)
            for j, (label, cfg) in enumerate(methods.items()):
                t0 = time.perf_counter()
                try:
                    res = run_solve(seq, Path(tmp) / f"{row.sequence}_{j}",
                                    replace(cfg, keep_unreliable=True, evaluate_now=True),
                                    html=False, echo=lambda *a: None)
                except InputError as e:  # a failed method is a table entry
                    row.results[label] = str(e)
                    continue
                row.results[label] = MethodFigures.of(res, time.perf_counter() - t0)
                if label == DETECTOR_ONLY:
                    row.poses_only = _poses_only_rows(res)
            rows.append(row)
            if on_face is not None:
                on_face(i, row)
    return rows


@dataclass(frozen=True)
class MethodSummary:
    """Over faces: {figure: (mean, median)} of the solves that were written (neither failed
    nor refused), and the counts of failed (refused included), refused and unaligned ones."""

    stats: dict[str, tuple[float, float]]
    failures: int
    refused: int
    no_cloud: int

    def get(self, figure: str, stat: str) -> float | None:
        pair = self.stats.get(figure)
        return None if pair is None else pair[0 if stat == "mean" else 1]

    def to_dict(self) -> dict:
        out: dict = {k: {"mean": m, "median": md} for k, (m, md) in self.stats.items()}
        return out | {"failures": self.failures, "refused": self.refused,
                      "no_cloud": self.no_cloud}


def _stats(values: list[float]) -> tuple[float, float] | None:
    v = np.asarray(values, float)
    if not v.size or not np.isfinite(v).any():
        return None
    return float(np.nanmean(v)), float(np.nanmedian(v))


def summarise(rows: list[FaceRow], labels: Iterable[str]) -> dict[str, MethodSummary]:
    """{label: summary} of the methods (and poses-only rows) in ``labels``."""
    out = {}
    for label in labels:
        written, failures, refused, no_cloud = [], 0, 0, 0
        for row in rows:
            if label in row.poses_only:
                entry = row.poses_only[label]
                failures += "error" in entry
                if "rot_deg" in entry:
                    written.append({"rot_deg": entry["rot_deg"]})
                continue
            if label not in row.results:
                continue
            fig = row.figures(label)
            if fig is None or fig.refused is not None:
                failures += 1
                refused += fig is not None
            else:
                written.append(asdict(fig))
            no_cloud += fig is not None and fig.cloud_error is not None
        stats = {}
        for k in SUMMARY_FIGURES:
            s = _stats([w.get(k, math.nan) for w in written])
            if s is not None:
                stats[k] = s
        out[label] = MethodSummary(stats, failures, refused, no_cloud)
    return out

"""``facesfm eval``: run the classical baselines (and read ``facesfm solve`` outputs) on
held-out sequences and write the paper's comparison tables.

For every sequence and landmark count N, the landmark TRACKS (ids 0..N-1) come from

* the ground truth (``landmarks.npz``: oracle uv and visibility), plus optional Gaussian pixel
  noise of ``noise_px`` per coordinate (seeded per sequence, drawn once for all stored
  landmarks so that every N sees the same noise), or
* a landmark detector checkpoint (``landmark_checkpoint``; stage-1 network through
  :mod:`facesfm.training.inference`), visible where its visibility probability is >= 0.5.

Each method in ``methods`` (:data:`facesfm.solvers.baselines.METHODS`) reconstructs the landmarks
(and cameras) from them. Measured per run:

* landmark error (mm): after a Sim3 (Umeyama with scale) alignment of the reconstructed
  landmarks onto the GT landmark positions, the distance of each to its GT position
  (mean / median / RMSE / max);
* the paper's protocol (mm): landmark-initialised Umeyama, then point-to-surface ICP with
  scale to the GT mesh (``mesh.ply`` of the sequence), then the point-to-point distance of each
  reconstructed point to its nearest GT vertex, over the face region
  (:func:`facesfm.eval.metrics.reconstruction_metrics`);
* camera errors where the method gives poses: per-frame rotation error (deg) and ATE (mm) after
  a Sim3 trajectory alignment (:func:`facesfm.eval.metrics.pose_errors`).

A ``facesfm solve`` output folder (``solve_dirs``) is one more method: its fused ``cloud.ply``
is aligned (Umeyama on the optimised vs GT camera centres, then ICP) and measured the same way,
and its optimised poses against the GT ones in ``cameras.json``. Its sequence is the one in its
``report.json``.

Face region: for meshes of the built-in model (same vertex count), the model's
``face_region``; otherwise the GT vertices within :data:`REGION_RADIUS_MM` of a GT landmark.

Outputs (written atomically into ``out``): ``comparison.md/.csv`` (Table-2 layout: methods side
by side, the paper's published figures in their own column, labelled as not measured on our
data), ``sweep_<method>.md/.csv/.png`` (Table-1 layout, when several N are given),
``pose_errors.png`` (per-frame rotation error on the first sequence), ``results.csv`` (one row
per sequence x method x N) and ``results.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facesfm.data.cameras import check_solved_from, read_cameras
from facesfm.data.colmap import read_colmap_points
from facesfm.data.dataset import find_sequences
from facesfm.data.format import load_sequence
from facesfm.errors import InputError
from facesfm.eval.align import AlignConfig, AlignmentError, align_reconstruction, umeyama
from facesfm.eval.metrics import error_stats, pose_errors, reconstruction_metrics
from facesfm.eval.now import now_errors
from facesfm.eval.tables import (
    PAPER_COLUMN,
    PAPER_TABLE2,
    PAPER_UNIT_NOTE,
    Table,
    landmark_sweep_table,
    plot_landmark_sweep,
    plot_pose_errors,
    write_table,
)
from facesfm.faces.builtin import BuiltinFaceModel
from facesfm.faces.types import LANDMARK_COUNTS
from facesfm.io import atomic_dir, check_writable, write_json
from facesfm.solvers.baselines import METHODS, run_baseline
from facesfm.training.inference import load_networks, run_landmarks

__all__ = [
    "REGION_RADIUS_MM",
    "EvalReport",
    "evaluate_sequences",
    "format_summary",
    "landmark_tracks",
    "parse_landmark_counts",
    "parse_methods",
]

REGION_RADIUS_MM = 15.0

_SUMMARY_KEYS = ("lm_mean_mm", "lm_median_mm", "lm_rmse_mm", "icp_p2p_mean_mm",
                 "icp_p2p_median_mm", "icp_p2p_rmse_mm", "icp_p2s_mean_mm", "rot_mean_deg",
                 "ate_mm", "seconds")

_COLUMNS = {
    "lm_mean_mm": "landmark error mean (mm)",
    "lm_median_mm": "landmark error median (mm)",
    "lm_rmse_mm": "landmark error RMSE (mm)",
    "icp_p2p_mean_mm": "ICP point-to-point mean (mm)",
    "icp_p2s_mean_mm": "ICP point-to-surface mean (mm)",
    "rot_mean_deg": "rotation error mean (deg)",
    "ate_mm": "ATE (mm)",
    "seconds": "time (s)",
}
# with ``protocols`` including "now" (solve outputs only: the protocol measures a mesh)
_NOW_COLUMNS = {
    "now_median_mm": "NoW median (mm)",
    "now_mean_mm": "NoW mean (mm)",
    "now_std_mm": "NoW std (mm)",
    "now_metric_median_mm": "NoW metric median (mm)",
    "now_metric_mean_mm": "NoW metric mean (mm)",
    "now_metric_std_mm": "NoW metric std (mm)",
}
PROTOCOLS = ("icp", "now")


@dataclass
class EvalReport:
    """records: one dict per sequence x method x landmark count (keys: sequence, method,
    landmarks, source, the metrics of :data:`_SUMMARY_KEYS`, error); summary: per (method, N)
    the mean over sequences; tables: {file stem: Table}; caption: the landmark source."""

    records: list = field(default_factory=list)
    summary: list = field(default_factory=list)
    tables: dict = field(default_factory=dict)
    caption: str = ""
    per_frame_rotation: dict = field(default_factory=dict)
    out: Path | None = None


# ----------------------------------------------------------------------------- parsing


def parse_methods(text) -> list[str]:
    """"colmap_ba,factorization" -> list; InputError naming an unknown method."""
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    out = [m.strip() for m in items if m.strip()]
    for m in out:
        if m not in METHODS:
            raise InputError(f"--methods: unknown method {m!r}; known: "
                             f"{', '.join(sorted(METHODS))}")
    return list(dict.fromkeys(out))


def parse_landmark_counts(text) -> list[int]:
    """"68,200" -> [68, 200]; InputError naming a count not in LANDMARK_COUNTS."""
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    out = []
    for s in items:
        s = str(s).strip()
        if not s:
            continue
        try:
            n = int(s)
        except ValueError:
            raise InputError(f"--landmarks: {s!r} is not an integer") from None
        if n not in LANDMARK_COUNTS:
            raise InputError(f"--landmarks: unknown landmark count {n}; one of "
                             f"{', '.join(map(str, LANDMARK_COUNTS))}")
        out.append(n)
    if not out:
        raise InputError("--landmarks: no landmark count given")
    return list(dict.fromkeys(out))


# ----------------------------------------------------------------------------- inputs


def landmark_tracks(seq, noise_px: float = 0.0, seed: int = 0, index: int = 0):
    """Oracle tracks of a :class:`facesfm.data.format.Sequence` with Gaussian pixel noise.

    Returns (uv (F, L, 2), visible (F, L)) for all stored landmarks; noise of ``noise_px``
    standard deviation per coordinate from ``np.random.default_rng([seed, index])``.
    """
    if noise_px < 0 or not np.isfinite(noise_px):
        raise InputError(f"--landmark-noise must be a finite number >= 0, got {noise_px}")
    uv = seq.uv.copy()
    if noise_px > 0:
        rng = np.random.default_rng([int(seed), int(index)])
        uv = uv + noise_px * rng.standard_normal(uv.shape)
    return uv, seq.visible.copy()


def _detected_tracks(seq, nets):
    images = np.stack([seq.image(i) for i in range(len(seq))])
    uv, w = run_landmarks(nets, images)
    return uv, w > 0


@dataclass(frozen=True)
class _GroundTruth:
    vertices: np.ndarray | None
    faces: np.ndarray | None
    region: np.ndarray | None


def _builtin_region(n_vertices: int) -> np.ndarray | None:
    m = BuiltinFaceModel(texture_size=0)
    return m.face_region.copy() if len(m.template) == n_vertices else None


def _ground_truth(seq, region_cache: dict) -> _GroundTruth:
    """GT mesh of a sequence (mesh.ply) and its face region; None fields without a mesh."""
    import trimesh
    from scipy.spatial import cKDTree

    path = seq.root / "mesh.ply"
    if not path.is_file():
        return _GroundTruth(None, None, None)
    m = trimesh.load(path, process=False)
    v = np.asarray(m.vertices, dtype=np.float64)
    f = np.asarray(m.faces, dtype=np.int64)
    region = None
    if (seq.meta.get("face") or {}).get("source") == "builtin":
        if len(v) not in region_cache:
            region_cache[len(v)] = _builtin_region(len(v))
        region = region_cache[len(v)]
    if region is None:
        d, _ = cKDTree(seq.landmark_xyz).query(v)
        region = d <= REGION_RADIUS_MM
    return _GroundTruth(v, f, region)


# ----------------------------------------------------------------------------- metrics


def _landmark_metrics(points, gt_xyz) -> dict:
    ok = np.all(np.isfinite(points), axis=1)
    if ok.sum() < 3:
        return {"n_points": int(ok.sum())}
    S = umeyama(points[ok], gt_xyz[ok], with_scale=True)
    e = error_stats(np.linalg.norm(S.apply(points[ok]) - gt_xyz[ok], axis=1))
    return {"n_points": int(ok.sum()), "lm_mean_mm": e.mean, "lm_median_mm": e.median,
            "lm_rmse_mm": e.rmse, "lm_max_mm": e.max}


def _surface_metrics(points, gt: _GroundTruth, init_pairs) -> dict:
    if gt.vertices is None:
        return {}
    ok = np.all(np.isfinite(points), axis=1)
    try:
        al = align_reconstruction(points[ok], gt.vertices, gt.faces, init_pairs,
                                  AlignConfig(max_correspondence_mm=10.0))
    except AlignmentError as e:  # counted as a failure (NaN), never as a perfect score
        nan = float("nan")
        return {"icp_p2p_mean_mm": nan, "icp_p2p_median_mm": nan, "icp_p2p_rmse_mm": nan,
                "icp_p2s_mean_mm": nan, "icp_scale": nan, "icp_fitness": 0.0,
                "icp_error": str(e)}
    m = reconstruction_metrics(al.aligned, gt.vertices, gt.faces, gt.region)
    return {"icp_p2p_mean_mm": m.point_to_point.mean, "icp_p2p_median_mm": m.point_to_point.median,
            "icp_p2p_rmse_mm": m.point_to_point.rmse, "icp_p2s_mean_mm": m.accuracy.mean,
            "icp_scale": float(al.transform.s), "icp_fitness": float(al.fitness)}


def _pose_metrics(est, gt) -> tuple[dict, np.ndarray]:
    rot = np.full(len(gt), np.nan)
    ok = np.all(np.isfinite(est.reshape(len(est), -1)), axis=1)
    if ok.sum() < 3:
        return {}, rot
    pe = pose_errors(est[ok], gt[ok], "sim3")
    rot[ok] = pe.rotation_deg
    return {"rot_mean_deg": float(pe.rotation_deg.mean()),
            "rot_max_deg": float(pe.rotation_deg.max()), "ate_mm": pe.ate_mm}, rot


def _evaluate_baseline(method, seq, uv, vis, n, gt: _GroundTruth):
    if (seq.meta.get("face") or {}).get("source") == "mesh":
        # the baselines fix the depth flip of the factorisation against the mean face over the
        # 68 semantic landmarks; a user mesh's landmarks are samples of that mesh (measured: 179
        # degrees off on one such head, right on another). Resolving it by perspective instead
        # was wrong as often on 9-frame 128 px renders, so the baselines say they cannot.
        raise InputError(f"{method} cannot resolve the depth reflection of {seq.root.name}: "
                         f"its landmarks are samples of a user mesh, not the 68 semantic face "
                         f"points it needs")
    res = run_baseline(method, uv[:, :n], vis[:, :n], seq.K)
    gt_xyz = seq.landmark_xyz[:n]
    rec = _landmark_metrics(res.points, gt_xyz)
    ok = np.all(np.isfinite(res.points), axis=1)
    if ok.sum() >= 3:
        rec.update(_surface_metrics(res.points, gt, (res.points[ok], gt_xyz[ok])))
    rot = np.full(len(seq), np.nan)
    if res.cam_T_world is not None:
        pm, rot = _pose_metrics(res.cam_T_world, seq.cam_T_world)
        rec.update(pm)
    rec["seconds"] = float(res.timings.get("total", np.nan))
    rec.update({f"info_{k}": v for k, v in res.info.items()})
    return rec, rot


def _solve_sequence(solve_dir: Path, seqs: dict):
    """The sequence a solve folder was run on (from report.json): one of the given ones
    (``seqs``, by resolved path), with the frames the solve recorded; else InputError."""
    rep = solve_dir / "report.json"
    if not rep.is_file():
        raise InputError(f"--solve-dir {solve_dir}: no report.json (not a facesfm solve output)")
    try:
        src = Path(json.loads(rep.read_text())["input"]["path"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"{rep}: malformed ({type(e).__name__}: {e})") from None
    key = src.resolve()
    if key not in seqs:
        if not (src / "sequence.json").is_file():
            raise InputError(f"--solve-dir {solve_dir}: its input {src} is not a sequence with "
                             f"ground truth")
        given = ", ".join(str(p) for p in list(seqs)[:3]) + (" ..." if len(seqs) > 3 else "")
        raise InputError(f"--solve-dir {solve_dir} was solved from {src}, which is not among "
                         f"the sequences given ({given})")
    check_solved_from(solve_dir, seqs[key], f"--solve-dir {solve_dir}: {src}")
    return seqs[key]


def _now_metrics(solve_dir: Path, seq, gt: _GroundTruth) -> dict:
    """The NoW protocol's errors of a solve's mesh.ply, its landmarks read from colmap/."""
    import trimesh

    if gt.vertices is None:
        return {}
    mesh = solve_dir / "mesh.ply"
    if not mesh.is_file():
        raise InputError(f"--solve-dir {solve_dir}: no mesh.ply")
    m = trimesh.load(mesh, process=False)
    pts = read_colmap_points(solve_dir / "colmap")
    ids = np.array(sorted(pts), dtype=np.int64)
    X = np.array([pts[k] for k in ids]).reshape(-1, 3)
    res = now_errors(seq.landmark_xyz, gt.vertices, gt.faces, X, ids,
                     np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces))
    out = {}
    for name, r in res.items():
        if isinstance(r, str):
            out[f"{name}_error"] = r
        for k in ("median", "mean", "std"):
            out[f"{name}_{k}_mm"] = float("nan") if isinstance(r, str) else getattr(r, f"{k}_mm")
    return out


def _evaluate_solve(solve_dir: Path, seq, gt: _GroundTruth, protocols=("icp",)):
    import trimesh

    cams = read_cameras(solve_dir)
    cloud = solve_dir / "cloud.ply"
    if not cloud.is_file():
        raise InputError(f"--solve-dir {solve_dir}: no cloud.ply")
    pts = np.asarray(trimesh.load(cloud, process=False).vertices, dtype=np.float64)
    if len(pts) < 3:
        raise InputError(f"{cloud}: fewer than 3 points")
    gt_poses = cams.gt if cams.gt is not None else seq.cam_T_world[cams.input_index]
    rec: dict = {"n_points": len(pts)}
    rot = np.full(len(seq), np.nan)
    if len(gt_poses) >= 3:
        pm, r = _pose_metrics(cams.optimised, gt_poses)
        rec.update(pm)
        rot[cams.input_index] = r
        S = pose_errors(cams.optimised, gt_poses, "sim3").gauge
        init = (pts, S.apply(pts))  # the trajectory's Sim3 as the ICP initialisation
    else:
        init = None
    rec.update(_surface_metrics(pts, gt, init))
    if "now" in protocols:
        rec.update(_now_metrics(solve_dir, seq, gt))
    return rec, rot


# ----------------------------------------------------------------------------- tables


def _mean(vals):
    v = [x for x in vals if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else None


def _summarise(records: list, keys=_SUMMARY_KEYS) -> list:
    groups: dict = {}
    for r in records:
        groups.setdefault((r["method"], r["landmarks"]), []).append(r)
    out = []
    for (method, n), rs in groups.items():
        ok = [r for r in rs if "error" not in r]
        s = {"method": method, "landmarks": n, "sequences": len(ok), "failed": len(rs) - len(ok)}
        for k in keys:
            s[k] = _mean([r.get(k) for r in ok])
        out.append(s)
    return out


def _comparison_table(summary: list, caption: str, columns=_COLUMNS):
    keys = list(columns)
    cols = ("method", "landmarks", "sequences", *(columns[k] for k in keys),
            f"{PAPER_COLUMN}: Stirling", f"{PAPER_COLUMN}: Facescape")
    rows = [(s["method"], s["landmarks"], s["sequences"], *(s[k] for k in keys), None, None)
            for s in summary]
    for m, d in PAPER_TABLE2.items():
        rows.append((m, None, None, *(None for _ in keys), d.get("Stirling"), d.get("Facescape")))
    notes = (
        caption,
        ("Ours: mean over sequences. Landmark error: distance to the GT landmark after a Sim3 "
         "(Umeyama, with scale) alignment. ICP point-to-point: landmark-initialised Umeyama + "
         "point-to-surface ICP with scale to the GT mesh, then distance to the nearest GT "
         "vertex in the face region (the paper's protocol). Rotation error / ATE: after a "
         "Sim3 trajectory alignment. Point-to-surface: the same alignment, distance to the GT "
         "triangles (free of the GT mesh's vertex spacing, which dominates point-to-point for "
         "dense clouds)."),
        PAPER_UNIT_NOTE,
    )
    if any(k.startswith("now_") for k in keys):
        notes += (("NoW: the NoW benchmark's protocol on the mesh of a solve (baselines have "
                   "none): the GT mesh sampled and cropped to 100 mm around the nose tip, the "
                   "mesh aligned by the 7 NoW landmarks (similarity; metric: rigid), rotation "
                   "and translation refined by scan-to-mesh ICP, then every scan point's "
                   "distance to the mesh (facesfm.eval.now)."),)
    return Table(cols, tuple(rows), "Comparison of methods (paper Table 2 layout)", notes)


def format_summary(report: EvalReport) -> str:
    """The comparison table (our rows only) as plain Markdown for the terminal."""
    t = report.tables.get("comparison")
    if t is None:
        return "(no results)"
    ours = tuple(r for r in t.rows if r[1] is not None)
    keep = [j for j, c in enumerate(t.columns) if "paper" not in c]
    slim = Table(tuple(t.columns[j] for j in keep), tuple(tuple(r[j] for j in keep) for r in ours))
    return slim.to_markdown(precision=3) + f"\n{report.caption}\n"


# ----------------------------------------------------------------------------- entry


def evaluate_sequences(seqs, methods, landmarks_n, out, noise_px: float = 0.0, seed: int = 0,
                       solve_dirs=(), landmark_checkpoint=None, overwrite: bool = False,
                       progress: bool = False, protocols=("icp",)) -> EvalReport:
    """Evaluate baselines (and solve outputs) on sequences; write the tables into ``out``.

    seqs:        sequence folders or dataset folders (:func:`facesfm.data.dataset.find_sequences`).
    methods:     baseline names (list or comma-separated), may be empty when ``solve_dirs``.
    landmarks_n: landmark counts (list or comma-separated), each in LANDMARK_COUNTS and at most
                 the count stored in every sequence; the first one is the comparison's main row.
    out:         output folder (replaced only with ``overwrite``).
    noise_px:    Gaussian noise (px per coordinate) on oracle tracks; seed seeds it.
    solve_dirs:  folders written by ``facesfm solve`` on sequences with ground truth.
    landmark_checkpoint: stage-1 checkpoint; then landmarks are detected, not oracle.
    protocols:   "icp" (always: landmark similarity + ICP to the GT mesh) and "now" (also the
                 NoW benchmark's errors of each solve's mesh, :mod:`facesfm.eval.now`); a list
                 or comma-separated.
    A failing method on one sequence is recorded (``error``) and does not stop the others.
    """
    if isinstance(protocols, str):
        protocols = [p.strip() for p in protocols.split(",") if p.strip()]
    unknown = sorted(set(protocols) - set(PROTOCOLS))
    if unknown:
        raise InputError(f"--protocol {','.join(protocols)}: unknown {unknown}; choose from "
                         f"{list(PROTOCOLS)}")
    methods = parse_methods(methods)
    counts = parse_landmark_counts(landmarks_n)
    solve_dirs = [Path(p) for p in solve_dirs]
    for d in solve_dirs:
        if not d.is_dir():
            raise InputError(f"--solve-dir: folder not found: {d}")
    if not methods and not solve_dirs:
        raise InputError("nothing to evaluate: give --methods and/or --solve-dir")
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"output folder exists: {out} (pass --overwrite to replace it)")
    check_writable(out)
    if landmark_checkpoint is not None and not Path(landmark_checkpoint).is_file():
        raise InputError(f"--landmark-checkpoint: file not found: {landmark_checkpoint}")
    if noise_px < 0 or not np.isfinite(noise_px):
        raise InputError(f"--landmark-noise must be a finite number >= 0, got {noise_px}")
    paths = find_sequences(list(seqs))
    if not paths:
        raise InputError("no sequences given")
    loaded = {}
    for p in paths:
        s = load_sequence(p, check_files=landmark_checkpoint is not None)
        if methods and max(counts) > len(s.landmark_ids):
            raise InputError(f"--landmarks {max(counts)}: {p} stores only "
                             f"{len(s.landmark_ids)} landmarks")
        loaded[Path(p).resolve()] = s
    nets = None
    if landmark_checkpoint is not None and methods:
        nets = load_networks(landmark_checkpoint=landmark_checkpoint)
        caption = (f"Landmark tracks detected by {landmark_checkpoint} (visibility >= 0.5).")
    else:
        caption = ("Landmark tracks: ground truth (oracle) "
                   + (f"with Gaussian noise of {noise_px:g} px per coordinate (seed {seed})"
                      if noise_px > 0 else "without noise")
                   + "; no landmark detector was evaluated.")

    jobs = [(i, p, m, n) for i, p in enumerate(paths) for n in counts for m in methods]
    solve_of = {d: _solve_sequence(d, loaded) for d in solve_dirs}
    jobs += [(None, d, "solve", None) for d in solve_dirs]
    report = EvalReport(caption=caption)
    region_cache: dict = {}
    gts: dict = {}
    tracks: dict = {}
    try:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), disable=not progress, unit="run", leave=False)
    except ImportError:  # pragma: no cover
        bar = None
    try:
        for i, p, m, n in jobs:
            seq = loaded[Path(p).resolve()] if m != "solve" else solve_of[p]
            key = seq.root.resolve()
            if key not in gts:
                gts[key] = _ground_truth(seq, region_cache)
            name = m if m != "solve" else f"solve:{Path(p).name}"
            rec = {"sequence": seq.root.name, "method": name,
                   "landmarks": n if n is not None else len(seq.landmark_ids)}
            if bar is not None:
                bar.set_postfix_str(f"{seq.root.name} {name} {n or ''}".strip())
            t0 = time.perf_counter()
            try:
                if m == "solve":
                    r, rot = _evaluate_solve(p, seq, gts[key], protocols)
                    rec["source"] = "solve"
                else:
                    if i not in tracks:
                        tracks[i] = (_detected_tracks(seq, nets) if nets is not None
                                     else landmark_tracks(seq, noise_px, seed, i))
                    uv, vis = tracks[i]
                    r, rot = _evaluate_baseline(m, seq, uv, vis, n, gts[key])
                    rec["source"] = "detected" if nets is not None else "oracle"
                    rec["noise_px"] = 0.0 if nets is not None else float(noise_px)
                rec.update(r)
                rec.setdefault("seconds", time.perf_counter() - t0)
                first = seq.root.resolve() == Path(paths[0]).resolve()
                if first and n in (None, counts[0]):
                    report.per_frame_rotation[name] = rot
            except InputError as e:
                rec["error"] = str(e)
            report.records.append(rec)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    columns = {**_COLUMNS, **(_NOW_COLUMNS if "now" in protocols else {})}
    report.summary = _summarise(report.records, [*_SUMMARY_KEYS, *columns])
    _write_outputs(report, out, counts, overwrite, columns)
    return report


def _write_outputs(report: EvalReport, out: Path, counts: list, overwrite: bool,
                   columns=_COLUMNS) -> None:
    report.tables["comparison"] = _comparison_table(report.summary, report.caption, columns)
    methods = list(dict.fromkeys(s["method"] for s in report.summary))
    sweeps = {}
    if len(counts) > 1:
        for m in methods:
            if m.startswith("solve:"):
                continue
            meas = {s["landmarks"]: s["icp_p2p_mean_mm"] for s in report.summary
                    if s["method"] == m}
            t = landmark_sweep_table(meas, "Stirling", "ICP point-to-point mean (mm)",
                                     f"{m}: error against the number of landmarks "
                                     f"(paper Table 1 layout)")
            report.tables[f"sweep_{m}"] = Table(t.columns, t.rows, t.title,
                                                (report.caption, *t.notes))
            sweeps[m] = meas
    records = Table.from_records(report.records, title="Every run")
    report.tables["results"] = records
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for stem, t in report.tables.items():
            write_table(t, tmp / f"{stem}.md", tmp / f"{stem}.csv", precision=3)
        for m, meas in sweeps.items():
            plot_landmark_sweep(meas, tmp / f"sweep_{m}.png", "Stirling",
                                title=f"{m} ({report.caption.split(';')[0]})")
        series = {k: v for k, v in report.per_frame_rotation.items() if np.isfinite(v).any()}
        if series:
            plot_pose_errors(series, tmp / "pose_errors.png",
                             title="rotation error per frame (first sequence)")
        write_json(tmp / "results.json", {
            "caption": report.caption, "landmark_counts": counts,
            "summary": report.summary, "records": report.records,
        })
    report.out = out

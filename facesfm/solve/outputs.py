"""Files written by ``facesfm solve`` (all inside the atomically renamed output folder).

::

    <out>/cloud.ply      fused point cloud (world mm, colours, normals; binary PLY)
    <out>/mesh.ply       surface mesh with vertex colours (world mm)
    <out>/mesh.obj       the same mesh as OBJ (vertex colours as "v x y z r g b")
    <out>/cameras.json   poses per frame (below)
    <out>/colmap/        cameras.txt, images.txt, points3D.txt of the optimised poses and
                         the landmark points (:func:`facesfm.data.colmap.write_colmap_text`)
    <out>/report.json    stages (oracle or learned), timings, BA summary, per-frame
                         reprojection errors, counts, evaluation against GT when known
    <out>/report.html    the same, self-contained (base64 PNGs): trajectory, reprojection
                         errors, depth maps, the mesh from three views

``cameras.json``: :mod:`facesfm.data.cameras`.
"""

from __future__ import annotations

import base64
import html as html_lib
import io
import json
from pathlib import Path

import numpy as np

from facesfm.config import to_dict
from facesfm.data.cameras import Cameras, write_cameras
from facesfm.data.colmap import write_colmap_text
from facesfm.eval.metrics import align_trajectories, poses_in_frame
from facesfm.geometry.camera import look_at, transform
from facesfm.io import atomic_path, write_json
from facesfm.solve.fusion import _o3d

__all__ = [
    "write_outputs",
    "write_report_json",
]

# ----------------------------------------------------------------------------- writers


def _write_cloud(path: Path, cloud) -> None:
    o3d = _o3d()
    pc = o3d.geometry.PointCloud()
    pc.points = o3d.utility.Vector3dVector(cloud.points)
    pc.colors = o3d.utility.Vector3dVector(cloud.colors)
    pc.normals = o3d.utility.Vector3dVector(cloud.normals)
    if not o3d.io.write_point_cloud(str(path), pc, write_ascii=False):
        raise OSError(f"could not write {path}")


def _write_mesh(folder: Path, mesh) -> None:
    import trimesh

    col = np.clip(np.round(mesh.colors * 255), 0, 255).astype(np.uint8)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=col, process=False)
    (folder / "mesh.ply").write_bytes(tm.export(file_type="ply"))
    obj = tm.export(file_type="obj", include_color=True, include_normals=False,
                    include_texture=False)
    (folder / "mesh.obj").write_text(obj if isinstance(obj, str) else obj.decode())


def cameras_of(res) -> Cameras:
    """The :class:`Cameras` of a :class:`facesfm.solve.pipeline.SolveResult`."""
    fr = res.frames
    return Cameras(fr.K_original, *fr.original_size, fr.names, np.flatnonzero(res.kept),
                   res.poses_initial, res.ba.poses, res.poses_gt, np.exp(res.ba.log_scale),
                   res.config.stage_sources()["initial_poses"])


def _keyframes(res) -> np.ndarray:
    """(F,) bool: the frames the joint stages ran on (all, unless others were registered)."""
    if res.keyframes is None:
        return np.ones(len(res.frames.names), dtype=bool)
    return res.keyframes


def _finite(x):
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(x, dtype=np.float64)]


def report_dict(res) -> dict:
    """report.json contents of a SolveResult."""
    fr = res.frames
    skipped = [i for i in range(len(res.kept)) if not res.kept[i]]
    return {
        "format": "facesfm-solve-report", "version": 1,
        "status": res.status, "problems": list(res.problems),
        "checks": res.checks.summary(),
        "input": {"path": str(fr.path), "kind": fr.source, "frames": len(res.kept),
                  "sha256": res.input_sha256 or None,
                  "width": fr.original_size[0], "height": fr.original_size[1]},
        "intrinsics": {"K": fr.K_original.tolist(), "source": fr.K_source,
                       "principal_point": {
                           "px": fr.K_original[:2, 2].tolist(),
                           "given": fr.principal_point_given,
                           "note": None if fr.principal_point_given else
                           "taken at the frame's centre: right for an uncropped photo or "
                           "video; a crop's is elsewhere (give --intrinsics)"},
                       "focal_estimate": None if res.focal is None else res.focal.summary()},
        "face_crop": None if fr.crop is None else fr.crop.summary() | {
            "detector_views": fr.detector_crops is not None},
        "stages": res.config.stage_sources(),
        "frames_used": list(fr.names),
        "keyframes": None if res.keyframes is None else
        [n for n, k in zip(fr.names, res.keyframes) if k],
        "registration": None if res.registration is None else {
            **res.registration.summary(),
            "note": "these frames' cameras were fitted alone to the keyframes' reconstruction "
                    "(landmarks, and skin patches with --tracks); their initial poses are the "
                    "keyframes' initial poses interpolated"},
        "frames_skipped": skipped,
        "landmarks": {"count": int(res.landmarks.weight.shape[1]),
                      "observed_per_frame": (res.landmarks.weight > 0).sum(1).tolist()},
        "ba": res.ba.summary(),
        "photometric": res.photometric,
        "reprojection_px": {"initial": _finite(res.reproj_initial_px),
                            "optimised": _finite(res.reproj_final_px),
                            "initial_mean": float(np.nanmean(res.reproj_initial_px)),
                            "optimised_mean": float(np.nanmean(res.reproj_final_px))},
        "cloud": {"points": len(res.cloud)},
        "mesh": {"vertices": len(res.mesh.vertices), "faces": len(res.mesh.faces)},
        "timings_s": {k: float(v) for k, v in res.timings.items()},
        "evaluation": res.evaluation.to_dict() if res.evaluation else {},
        "config": to_dict(res.config),
    }


def write_report_json(path, res) -> None:
    write_json(path, report_dict(res))


def write_outputs(folder, res, html: bool = True, before_reports=None) -> None:
    """Write every output file of ``res`` (a SolveResult) into ``folder``.

    ``before_reports`` (optional, no arguments) runs after the geometry, cameras and COLMAP
    files and before report.json / report.html, e.g. to record final timings in them."""
    folder = Path(folder)
    _write_cloud(folder / "cloud.ply", res.cloud)
    _write_mesh(folder, res.mesh)
    key = _keyframes(res)
    extra = [{"reprojection_initial_px": _finite([a])[0],
              "reprojection_optimised_px": _finite([b])[0], "keyframe": bool(k)}
             for a, b, k in zip(res.reproj_initial_px, res.reproj_final_px, key)]
    write_cameras(folder / "cameras.json", cameras_of(res), extra)
    X = res.landmarks_xyz
    fin = np.all(np.isfinite(X), 1)
    vis = (res.landmarks.weight > 0) & fin[None]
    colors = _landmark_colors(res, vis)
    fr = res.frames
    uv = res.landmarks.uv if fr.crop is None else fr.crop.uv_to_original(res.landmarks.uv)
    write_colmap_text(folder / "colmap", fr.K_original, *fr.original_size, res.ba.poses,
                      list(fr.names), res.landmarks.ids, np.where(fin[:, None], X, 0.0),
                      np.where(vis[..., None], uv, 0.0), vis, colors)
    if before_reports is not None:
        before_reports()
    write_report_json(folder / "report.json", res)
    if html:
        with atomic_path(folder / "report.html") as tmp:
            tmp.write_text(report_html(res))


def _landmark_colors(res, vis) -> np.ndarray:
    """(N, 3) uint8: each landmark's pixel colour in its first observing frame (grey if none)."""
    N = vis.shape[1]
    H, W = res.frames.height, res.frames.width
    first = vis.argmax(0)  # first frame that sees each landmark (0 where none does)
    seen = vis.any(0)
    u, v = np.moveaxis(res.landmarks.uv[first, np.arange(N)], -1, 0)
    r = np.clip(np.round(v), 0, H - 1).astype(np.int64)
    c = np.clip(np.round(u), 0, W - 1).astype(np.int64)
    col = np.full((N, 3), 128, dtype=np.uint8)
    col[seen] = res.frames.images[first, r, c][seen]
    return col


# ----------------------------------------------------------------------------- report.html


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _centres(T: np.ndarray) -> np.ndarray:
    return -np.einsum("fba,fb->fa", T[:, :3, :3], T[:, :3, 3])


def look_point(poses: np.ndarray) -> np.ndarray:
    """(3,) the world point nearest to every camera's optical axis in the least-squares sense
    (what the cameras look at: the head); the cameras' mean centre when the axes are
    parallel."""
    c = _centres(poses)
    d = poses[:, 2, :3]  # optical axes in the world (rows of R: camera z)
    P = np.eye(3)[None] - d[:, :, None] * d[:, None, :]
    A, b = P.sum(0), np.einsum("fab,fb->a", P, c)
    if np.linalg.cond(A) > 1e8:
        return c.mean(0)
    return np.linalg.solve(A, b)


def trajectory_figure(initial, optimised, gt=None, initial_label: str = "initial (learned)"):
    """Camera centres seen from above the head (the cameras' mean image-up pointing out of
    the page, :func:`view_frame`): initial vs optimised (vs GT, after a Sim3 alignment of the
    optimised trajectory to it, applied to both estimates), about the point the optimised
    cameras look at."""
    import matplotlib.pyplot as plt

    if gt is not None and len(gt) >= 3:
        try:
            S = align_trajectories(optimised, gt, "sim3")
            initial, optimised = poses_in_frame(S, initial), poses_in_frame(S, optimised)
        except ValueError:
            pass
    centre = look_point(optimised)
    front, up = view_frame(optimised, centre)
    side = np.cross(up, front)
    fig, ax = plt.subplots(figsize=(5, 4))
    for T, label, style in ((initial, initial_label, "o--"),
                            (optimised, "optimised (BA)", "s-"), (gt, "ground truth", "x:")):
        if T is None:
            continue
        c = _centres(T) - centre
        ax.plot(c @ side, c @ front, style, label=label, ms=4)
    ax.plot([0], [0], "k+", ms=10, label="where the cameras look")
    ax.set_xlabel("across the view (mm)")
    ax.set_ylabel("towards the cameras (mm)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=8)
    ax.set_title("camera centres, seen from above the head")
    return fig


#: the per-frame reprojection figure draws bars up to this many frames, lines beyond
MAX_BAR_FRAMES = 80


def reprojection_figure(names, initial, optimised):
    import matplotlib.pyplot as plt

    # bars while they stay readable; a long sequence's (601 frames: a 150-inch-wide figure of
    # 1,202 bars) as lines in a figure of bounded width
    n = len(names)
    fig, ax = plt.subplots(figsize=(min(12, max(5, 0.25 * n)), 3))
    x = np.arange(n)
    if n <= MAX_BAR_FRAMES:
        ax.bar(x - 0.2, initial, 0.4, label="initial")
        ax.bar(x + 0.2, optimised, 0.4, label="optimised")
    else:
        ax.plot(x, initial, lw=0.8, label="initial")
        ax.plot(x, optimised, lw=0.8, label="optimised")
    ax.set_xlabel("frame")
    ax.set_ylabel("RMS reprojection (px)")
    ax.legend(fontsize=8)
    return fig


def depth_figure(depth, mask, names, count: int = 6):
    import matplotlib.pyplot as plt

    idx = np.unique(np.linspace(0, len(depth) - 1, min(count, len(depth))).round().astype(int))
    fig, axes = plt.subplots(1, len(idx), figsize=(2.2 * len(idx), 2.4), squeeze=False)
    valid = depth[mask & (depth > 0)]
    lo, hi = (np.percentile(valid, [1, 99]) if valid.size else (0.0, 1.0))
    for ax, i in zip(axes[0], idx):
        d = np.where(mask[i] & (depth[i] > 0), depth[i], np.nan)
        im = ax.imshow(d, cmap="viridis", vmin=lo, vmax=hi)
        ax.set_title(names[i], fontsize=7)
        ax.axis("off")
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="depth (mm)")
    return fig


def view_frame(poses: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (front, up) of the world as the cameras ``poses`` (F, 4, 4 cam_T_world)
    saw it around ``centre``: front points from ``centre`` to the cameras' mean centre, up is
    the cameras' mean image-up direction (-y of OpenCV axes) made orthogonal to front. A
    solve's world is the mean face's or the first camera's frame, whose +y is not up."""
    R = poses[:, :3, :3]
    front = (_centres(poses) - centre).mean(0)
    up = -R[:, 1, :].mean(0)  # world direction of each camera's image up, averaged
    front /= max(np.linalg.norm(front), 1e-12)
    up = up - front * float(up @ front)
    return front, up / max(np.linalg.norm(up), 1e-12)


def mesh_views_figure(mesh, poses: np.ndarray, yaws=(-45.0, 0.0, 45.0),
                      max_faces: int = 8000):
    """The mesh from three yaw angles about the cameras' mean view, upright as the cameras saw
    it (:func:`view_frame`; painter's algorithm, Lambert shading x vertex colour). Each view
    is about 240 px wide in the report, so ``max_faces`` triangles (vertex clustering) draw
    it as well as all of them."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    v, f, col = mesh.vertices, mesh.faces, mesh.colors
    if len(f) > max_faces:  # vertex clustering keeps the surface closed (a subset has holes)
        o3d = _o3d()
        m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v),
                                      o3d.utility.Vector3iVector(f.astype(np.int32)))
        m.vertex_colors = o3d.utility.Vector3dVector(col)
        edge = float(np.linalg.norm(v[f[:, 0]] - v[f[:, 1]], axis=1).mean())
        m = m.simplify_vertex_clustering(edge * np.sqrt(len(f) / max_faces),
                                         o3d.geometry.SimplificationContraction.Average)
        v, f = np.asarray(m.vertices), np.asarray(m.triangles).astype(np.int64)
        col = np.asarray(m.vertex_colors)
    centre = 0.5 * (v.min(0) + v.max(0))
    radius = float(np.linalg.norm(v.max(0) - v.min(0))) + 1.0
    front, up = view_frame(poses, centre)
    side = np.cross(up, front)
    fig, axes = plt.subplots(1, len(yaws), figsize=(3 * len(yaws), 3.2))
    for ax, yaw in zip(np.atleast_1d(axes), yaws):
        a = np.deg2rad(yaw)
        eye = centre + 2 * radius * (np.cos(a) * front + np.sin(a) * side)
        Xc = transform(look_at(eye, centre, up), v)
        tri = Xc[f]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        shade = 0.25 + 0.75 * np.abs(n[:, 2])
        rgb = np.clip(col[f].mean(1) * shade[:, None], 0, 1)
        order = np.argsort(-tri[:, :, 2].mean(1))  # far first
        pc = PolyCollection(tri[order][:, :, :2] * np.array([1.0, -1.0]),
                            facecolors=rgb[order], edgecolors="none", antialiaseds=False)
        ax.add_collection(pc)
        ax.set_xlim(-0.6 * radius, 0.6 * radius)
        ax.set_ylim(-0.6 * radius, 0.6 * radius)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(f"yaw {yaw:+.0f} deg", fontsize=8)
    return fig


def report_html(res) -> str:
    """A self-contained HTML report (images embedded as base64 PNGs)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    rep = report_dict(res)
    key = _keyframes(res)
    figs = [
        ("Trajectory: learned vs optimised" + (" vs ground truth" if res.poses_gt is not None
                                                else ""),
         trajectory_figure(res.poses_initial, res.ba.poses, res.poses_gt,
                           "initial: " + res.config.stage_sources()["initial_poses"])),
        ("Per-frame reprojection error of the landmark points",
         reprojection_figure(res.frames.names, res.reproj_initial_px, res.reproj_final_px)),
        ("Depth maps (masked, times the BA depth scale)",
         depth_figure(res.depth.depth * np.exp(res.ba.log_scale[key])[:, None, None],
                      res.depth.mask, [n for n, k in zip(res.frames.names, key) if k])),
        ("The mesh from three views", mesh_views_figure(res.mesh, res.ba.poses)),
    ]
    esc = html_lib.escape
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(str(v))}</td></tr>"
                   for k, v in rep["stages"].items())
    times = "".join(f"<tr><td>{esc(k)}</td><td>{v:.2f}</td></tr>"
                    for k, v in rep["timings_s"].items())
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>facesfm solve report</title>",
        ("<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
         "table{border-collapse:collapse}td{border:1px solid #ccc;padding:2px 8px}"
         "pre{background:#f4f4f4;padding:6px}</style></head><body>"),
        f"<h1>facesfm solve: {esc(str(res.frames.path))}</h1>",
        (f"<p>{len(res.frames.names)} frames used of {len(res.kept)} "
         f"({res.frames.width}x{res.frames.height})"
         + ("" if res.keyframes is None else
            f", {int(res.keyframes.sum())} of them keyframes (the others registered to "
            f"their reconstruction)")
         + f", {len(res.cloud)} cloud points, "
         f"{len(res.mesh.faces)} mesh triangles.</p>"),
        f"<h2>Stages</h2><table>{rows}</table>",
        f"<h2>Bundle adjustment</h2><pre>{esc(json.dumps(rep['ba'], indent=1))}</pre>",
    ]
    if rep["evaluation"]:
        parts.append("<h2>Evaluation against ground truth</h2>"
                     f"<pre>{esc(json.dumps(rep['evaluation'], indent=1))}</pre>")
    for title, fig in figs:
        parts.append(f"<h2>{esc(title)}</h2><img src='data:image/png;base64,{_png(fig)}'>")
    parts.append(f"<h2>Timings (s)</h2><table>{times}</table></body></html>")
    return "\n".join(parts)

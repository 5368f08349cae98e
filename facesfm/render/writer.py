"""Render one sequence of a face and write it, with all ground truth, in the facesfm format.

The folder is built under a temporary name and renamed into place only when complete
(:func:`facesfm.io.atomic_dir`), so an interrupted run leaves no partial sequence behind.
See :mod:`facesfm.data.format` for the layout.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from facesfm.config import to_dict
from facesfm.data.colmap import write_colmap_text
from facesfm.data.format import FORMAT_NAME, FORMAT_VERSION, frame_files, write_png
from facesfm.errors import InputError
from facesfm.faces.types import FaceMesh
from facesfm.geometry.camera import intrinsics
from facesfm.io import atomic_dir, write_json
from facesfm.render.camera_effects import apply_camera, sample_camera, sample_motion
from facesfm.render.config import RenderConfig
from facesfm.render.lights import sample_light_rig, sample_lighting
from facesfm.render.occluders import draw_occluders, frame_hand, sample_occluders
from facesfm.render.photos import photo_background, sample_photo_background
from facesfm.render.renderer import FaceRenderer, make_background
from facesfm.render.skin import sample_skin_variation, vary_skin
from facesfm.render.trajectory import make_trajectory
from facesfm.render.visibility import landmark_normals, landmark_visibility

__all__ = ["SequenceResult", "frame_stream", "render_sequence", "sequence_streams"]


@dataclass(frozen=True)
class SequenceResult:
    """What :func:`render_sequence` wrote.

    path: the sequence folder; frames: F; visible_per_frame: (F,) int landmarks visible in
    each frame; seconds: wall time of rendering and writing.
    """

    path: Path
    frames: int
    visible_per_frame: np.ndarray
    seconds: float


def sequence_streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent random streams of one sequence (lighting, background, lens, and the
    appearance randomisation: photo background, camera, light, skin, occluders)."""
    s = int(seed) & 0xFFFFFFFF
    return {
        "lighting": np.random.default_rng([s, 0x1197]),
        "background": np.random.default_rng([s, 0xB6]),
        "photo": np.random.default_rng([s, 0xF070]),
        "camera": np.random.default_rng([s, 0xCA3E]),
        "lens": np.random.default_rng([s, 0x1E25]),
        "light": np.random.default_rng([s, 0x1164]),
        "skin": np.random.default_rng([s, 0x5C12]),
        "occluders": np.random.default_rng([s, 0x0CC1]),
    }


def sequence_lens(cfg: RenderConfig, stream: np.random.Generator) -> float:
    """The factor on ``cfg.focal`` and on the camera's distance of one sequence: 1 where
    ``cfg.focal_spread`` is 1 (nothing drawn), else log-uniform in [1 / spread, spread]."""
    if cfg.focal_spread == 1.0:
        return 1.0
    return float(np.exp(stream.uniform(-1.0, 1.0) * np.log(cfg.focal_spread)))


def frame_stream(seed: int, position: int, purpose: int = 0xF4A3E) -> np.random.Generator:
    """The random stream of frame ``position`` of a sequence for one ``purpose`` (the
    default: its motion blur and noise; ``OCCLUDER_FRAMES``: whether the hand shows): a
    frame's draws depend neither on how many frames came before it nor on the other
    purposes' draws."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(purpose), int(position)])


OCCLUDER_FRAMES = 0x0CC1F


def _write_ply(path: Path, mesh: FaceMesh, colors: np.ndarray | None) -> None:
    import trimesh

    tm = trimesh.Trimesh(
        vertices=np.asarray(mesh.vertices, dtype=np.float64),
        faces=np.asarray(mesh.faces, dtype=np.int64),
        vertex_colors=colors,
        process=False,
    )
    path.write_bytes(tm.export(file_type="ply"))


def render_sequence(
    face: FaceMesh,
    out: str | Path,
    cfg: RenderConfig | None = None,
    seed: int = 0,
    face_info: dict | None = None,
    overwrite: bool = False,
    renderer: FaceRenderer | None = None,
) -> SequenceResult:
    """Render ``face`` along ``cfg.trajectory`` and write the sequence folder ``out``.

    face:      the mesh (world frame, mm).
    cfg:       render options (default RenderConfig()).
    seed:      seeds trajectory jitter, lighting, background and appearance; same seed and
               config give identical files.
    face_info: stored as sequence.json "face" (source, seed, coeffs of the face model).
    overwrite: replace an existing ``out``; otherwise an existing folder is an InputError.
    renderer:  a FaceRenderer of the same size and intrinsics to reuse (batch rendering).
    """
    t0 = time.perf_counter()
    cfg = cfg or RenderConfig()
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"output folder exists: {out} (pass --overwrite to replace it)")
    L = cfg.landmarks
    if len(face.landmark_vertices) < L:
        raise InputError(
            f"{face.name} has {len(face.landmark_vertices)} landmarks, "
            f"--landmarks {L} asked for more"
        )
    streams = sequence_streams(seed)
    lens = sequence_lens(cfg, streams["lens"])
    K = intrinsics(cfg.focal * lens, cfg.width, cfg.height)
    vertices = np.asarray(face.vertices, dtype=np.float64)
    target = 0.5 * (vertices.min(0) + vertices.max(0))
    path = cfg.trajectory if lens == 1.0 else replace(
        cfg.trajectory, distance=cfg.trajectory.distance * lens,
        distance_jitter=cfg.trajectory.distance_jitter * lens)
    traj = make_trajectory(path, seed, target)
    lighting = sample_lighting(cfg.lighting, streams["lighting"])
    # appearance (off by default) draws from streams of its own: a render without it is
    # what it was before it existed
    photo = sample_photo_background(cfg.appearance.background, streams["photo"], cfg.height,
                                    cfg.width)
    camera = sample_camera(cfg.appearance.camera, streams["camera"])
    rig = sample_light_rig(cfg.appearance.light, streams["light"])
    skin = sample_skin_variation(cfg.appearance.skin, streams["skin"])
    occluders = sample_occluders(face, cfg.appearance.occluders, streams["occluders"])
    shown = face if skin is None else vary_skin(face, skin)  # the albedo the images show
    hands = []
    if photo is not None:
        bg_kind = "photo"
        background = photo_background(photo, cfg.height, cfg.width)
    else:
        bg_kind = cfg.background
        if bg_kind == "random":
            bg_kind = "noise" if streams["background"].random() < 0.5 else "gradient"
        background = make_background(
            bg_kind, cfg.background_color, cfg.height, cfg.width, streams["background"]
        )
    motion = []

    lm_vid = np.asarray(face.landmark_vertices[:L], dtype=np.int64)
    lm_xyz = vertices[lm_vid]
    lm_n = landmark_normals(vertices, face.faces, lm_vid, cfg.facing_radius)

    own_renderer = renderer is None
    if own_renderer:
        renderer = FaceRenderer(cfg.width, cfg.height, K)
    elif (renderer.width, renderer.height) != (cfg.width, cfg.height):
        raise ValueError("render_sequence: the renderer's size differs from cfg")
    else:
        renderer.set_intrinsics(K)  # a sequence's own lens (focal_spread)
    F = len(traj)
    uv = np.zeros((F, L, 2))
    z = np.zeros((F, L))
    visible = np.zeros((F, L), dtype=bool)
    frames_meta = []
    try:
        renderer.set_mesh(shown, lighting, rig)
        with atomic_dir(out, overwrite=overwrite) as tmp, ThreadPoolExecutor(2) as pool:
            for sub in ("rgb", "depth", "mask"):
                (tmp / sub).mkdir()
            pending = []
            for i in range(F):
                T = traj.cam_T_world[i]
                fr = renderer.render(T, background, clip_margin=cfg.znear_margin)
                rgb, seen = fr.rgb, fr.depth
                if occluders is not None:  # in front of the face: the image and what it hides
                    hands.append(frame_hand(occluders, frame_stream(seed, i, OCCLUDER_FRAMES)))
                    rgb, seen, _ = draw_occluders(rgb, seen, occluders, K, T, hands[-1])
                uv[i], z[i], visible[i] = landmark_visibility(
                    lm_xyz, lm_n, K, T, seen, cfg.depth_tolerance, cfg.edge_margin,
                    cfg.occlusion,
                )
                if camera is not None:  # the image only: the ground truth stays exact
                    frame_rng = frame_stream(seed, i)
                    motion.append(sample_motion(cfg.appearance.camera, frame_rng))
                    rgb = apply_camera(rgb, camera, motion[-1], frame_rng)
                files = frame_files(i)
                # PNG compression releases the GIL: overlap it with the next render.
                pending.append(pool.submit(
                    write_png, tmp / files["image"], rgb, cfg.png_compress_level))
                pending.append(pool.submit(
                    write_png, tmp / files["mask"], fr.mask.astype(np.uint8) * 255,
                    cfg.png_compress_level))
                np.save(tmp / files["depth"], fr.depth)
                frames_meta.append({
                    "index": int(traj.index[i]),
                    **files,
                    "cam_T_world": T.tolist(),
                    "yaw_deg": float(traj.yaw_deg[i]),
                    "pitch_deg": float(traj.pitch_deg[i]),
                    "roll_deg": float(traj.roll_deg[i]),
                })
            for p in pending:
                p.result()  # re-raise a failed write here, inside atomic_dir

            with open(tmp / "landmarks.npz", "wb") as fh:
                np.savez_compressed(
                    fh,
                    ids=np.arange(L, dtype=np.int64),
                    vertex_ids=lm_vid,
                    xyz=lm_xyz,
                    uv=uv,
                    visible=visible,
                    z=z,
                )
            albedo = shown.vertex_rgb()
            if cfg.write_mesh:
                _write_ply(tmp / "mesh.ply", face, albedo)
            if cfg.write_colmap:
                write_colmap_text(
                    tmp / "colmap", K, cfg.width, cfg.height, traj.cam_T_world,
                    [Path(fm["image"]).name for fm in frames_meta], np.arange(L), lm_xyz, uv,
                    visible, None if albedo is None else albedo[lm_vid],
                )
            appearance = {}
            if cfg.appearance.enabled:  # the drawn values; absent when off (as before it)
                appearance["appearance"] = {
                    "background": None if photo is None else photo.to_dict(),
                    "camera": None if camera is None else {
                        **camera.to_dict(), "motion_blur": [m.to_dict() for m in motion]},
                    "light": None if rig is None else rig.to_dict(),
                    "skin": None if skin is None else skin.to_dict(),
                    "occluders": None if occluders is None else {
                        **occluders.to_dict(), "hand_in_frame": hands},
                }
            write_json(tmp / "sequence.json", {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "units": "mm",
                "width": cfg.width,
                "height": cfg.height,
                "K": K.tolist(),
                # the factor on the focal length and on the camera's distance alike
                **({} if lens == 1.0 else {"lens": {"factor": lens}}),
                "frames": frames_meta,
                "face": face_info if face_info is not None else {"name": face.name},
                "landmarks": {"count": L, "file": "landmarks.npz"},
                "lighting": lighting.to_dict(),
                "background": bg_kind,
                **appearance,
                "target": traj.target.tolist(),
                "config": to_dict(cfg),
                "seed": int(seed),
            })
    finally:
        if own_renderer:
            renderer.close()
    return SequenceResult(
        path=out,
        frames=F,
        visible_per_frame=visible.sum(axis=1),
        seconds=time.perf_counter() - t0,
    )

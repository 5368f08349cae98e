"""The whole-solve checks of ``facesfm solve``: what makes a finished result untrustworthy
(:func:`check_result`), and the face meshes the motion check compares the cameras with
(:func:`motion_check_meshes`). A result with a problem is refused, or written marked
unreliable with ``--keep-unreliable`` (:func:`facesfm.solve.pipeline.solve_frames`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facesfm.errors import warn
from facesfm.geometry.similarity import umeyama
from facesfm.solve.config import SolveConfig
from facesfm.solve.frontend import CAPTURE_HINT, find_faces, have_face_finder, motion_agreement
from facesfm.solve.fusion import PointCloud, SurfaceMesh
from facesfm.solve.inputs import FrameSet
from facesfm.solvers.baselines import SEMANTIC_LANDMARKS, template_landmarks
from facesfm.solvers.landmark_ba import BAOutcome

__all__ = ["ResultChecks", "check_result", "face_shape_mm", "motion_check_meshes"]

#: fewer semantic landmark points than this and the face shape is not checked
MIN_SHAPE_LANDMARKS = 20


def motion_check_meshes(used: FrameSet, cfg: SolveConfig, echo) -> np.ndarray | None:
    """(F, 468, 3) the face meshes the motion check compares the cameras with (NaN rows: a
    frame not looked at, or without a face), or None when the check does not run
    (``cfg.motion_check`` "off", or "auto" without MediaPipe: a warning says so). The front
    end's meshes where it ran; else MediaPipe on at most ``cfg.motion_check_frames`` frames,
    evenly spread (about 12 ms each)."""
    if cfg.motion_check == "off":
        return None
    if used.face_mesh is not None:
        return used.face_mesh
    if cfg.motion_check == "auto" and not have_face_finder():
        warn(echo, f"the cameras were not checked against the head's turning: "
                   f"{CAPTURE_HINT}")
        return None
    F = used.num_frames
    idx = np.unique(np.linspace(0, F - 1, min(cfg.motion_check_frames, F)).round().astype(int))
    meshes = np.full((F, 468, 3), np.nan)
    meshes[idx] = find_faces(used.images[idx]).mesh
    return meshes


def face_shape_mm(points: np.ndarray, ids: np.ndarray) -> float | None:
    """How far the reconstructed landmark points are from a face: the RMS distance (mm, at
    the template's scale) between the semantic landmarks (IDs below 68, the same facial
    point on every face model) among ``points`` (N, 3) and the built-in mean face's, after
    the similarity that fits one to the other. None with fewer than
    :data:`MIN_SHAPE_LANDMARKS` of them reconstructed."""
    ids = np.asarray(ids, dtype=np.int64)
    X = np.asarray(points, dtype=np.float64)
    sem = (ids >= 0) & (ids < SEMANTIC_LANDMARKS) & np.isfinite(X).all(1)
    if sem.sum() < MIN_SHAPE_LANDMARKS:
        return None
    T = template_landmarks(SEMANTIC_LANDMARKS)[ids[sem]]
    sim = umeyama(T, X[sem])
    if not sim.s > 0:
        return None
    fitted = sim.s * T @ sim.R.T + sim.t
    return float(np.sqrt(((fitted - X[sem]) ** 2).sum(1).mean()) / sim.s)


@dataclass(frozen=True)
class ResultChecks:
    """What :func:`check_result` measured and found wrong.

    problems: one sentence each (empty: nothing found); motion_disagreement_deg: the median
    over the compared frames (None: not checked); motion_frames: how many were compared;
    mesh_faces; cloud_extent_mm: the diagonal of the cloud's 5-95 percentile box (None: no
    points); face_shape_mm: :func:`face_shape_mm` of the landmark points (None: not
    checked)."""

    problems: list[str]
    motion_disagreement_deg: float | None = None
    motion_frames: int = 0
    mesh_faces: int = 0
    cloud_extent_mm: float | None = None
    face_shape_mm: float | None = None

    def summary(self) -> dict:
        return {"motion_disagreement_deg": self.motion_disagreement_deg,
                "motion_frames": self.motion_frames, "mesh_faces": self.mesh_faces,
                "cloud_extent_mm": self.cloud_extent_mm,
                "face_shape_mm": self.face_shape_mm}


def check_result(used: FrameSet, ba: BAOutcome, cloud: PointCloud, mesh: SurfaceMesh,
                 cfg: SolveConfig, face_meshes: np.ndarray | None = None,
                 landmark_xyz: np.ndarray | None = None,
                 landmark_ids: np.ndarray | None = None) -> ResultChecks:
    """What makes the result untrustworthy:

    * the cameras' rotations disagree with the head's turning that ``face_meshes`` (F, 468,
      3) show (:func:`motion_check_meshes`, :func:`facesfm.solve.frontend.motion_agreement`;
      median over the frames above ``cfg.max_motion_disagreement_deg``): the BA ended in a
      wrong basin. On the realistic held-out renders (sequence folders) the previous ICT
      detector's solves that ended 163, 23 and 11.5 deg off disagreed by a median 55, 13
      and 11 deg; the true poses of those 20 faces and of the 20 plain held-out ones
      disagree by 1.7-8.0 deg (docs/solving.md);
    * the mesh has fewer than ``cfg.min_mesh_faces`` triangles;
    * the cloud's extent (the diagonal of its 5-95 percentile box) is outside
      ``cfg.face_extent_mm``: no face is that small or that large;
    * the reconstructed landmark points (``landmark_xyz`` (N, 3) with ``landmark_ids``) are
      not face-shaped: :func:`face_shape_mm` above ``cfg.max_face_shape_mm``;
    * the landmarks came from MediaPipe's face mesh, whose points slide over the face as the
      head turns (bench/results/capture.md: 4.5-23 deg mean rotation error on our renders,
      against 0.8-2.1 with the detector);
    * the focal length is still the default guess (none given or read, and none estimated):
      a guess 2.6x too long gave a cloud 23 mm from the surface (bench/results/focal.md).
    """
    problems = []
    if used.K_source == "default":
        problems.append(f"the focal length is a guess ({used.K_original[0, 0]:.0f} px, 1.2 x "
                        f"the longer side; none given, read from EXIF or estimated): give "
                        f"--focal or --intrinsics")
    if cfg.landmarks_from == "mediapipe":
        problems.append("the landmarks are MediaPipe's face-mesh points, which slide over the "
                        "face as the head turns: such solves of our renders were 4.5-23 deg "
                        "off (our detector's: 0.8-2.1)")
    median, compared = None, 0
    if face_meshes is not None:
        dis = motion_agreement(face_meshes, ba.poses, used.K)
        compared = int(np.isfinite(dis).sum())
        median = float(np.nanmedian(dis)) if compared >= 2 else None
        if median is not None and median > cfg.max_motion_disagreement_deg:
            worst = np.argsort(-np.nan_to_num(dis))[:3]
            problems.append(
                f"the cameras disagree with the head's turning that the face finder sees "
                f"(median {median:.1f} deg over {compared} frames, more than "
                f"{cfg.max_motion_disagreement_deg:g}; worst "
                + ", ".join(f"{used.names[i]} {dis[i]:.0f} deg" for i in worst) + ")")
    if len(mesh.faces) < cfg.min_mesh_faces:
        problems.append(f"the mesh is degenerate ({len(mesh.faces)} triangles, fewer than "
                        f"{cfg.min_mesh_faces})")
    extent = None
    if len(cloud.points):
        lo, hi = np.percentile(cloud.points, [5, 95], axis=0)
        extent = float(np.linalg.norm(hi - lo))
        if not cfg.face_extent_mm[0] <= extent <= cfg.face_extent_mm[1]:
            problems.append(f"the cloud is {extent:.0f} mm across, not a face "
                            f"({cfg.face_extent_mm[0]:g}-{cfg.face_extent_mm[1]:g} mm)")
    shape = None
    if landmark_xyz is not None and landmark_ids is not None:
        shape = face_shape_mm(landmark_xyz, landmark_ids)
        if shape is not None and shape > cfg.max_face_shape_mm:
            problems.append(f"the reconstructed landmarks are not face-shaped: {shape:.1f} mm "
                            f"RMS from the mean face after a similarity fit (more than "
                            f"{cfg.max_face_shape_mm:g})")
    return ResultChecks(problems, median, compared, len(mesh.faces), extent, shape)

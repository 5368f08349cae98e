"""Reading the input of ``facesfm solve``: a sequence folder, a folder of images or a video.

Every reader returns a :class:`FrameSet`: the frames as one (F, H, W, 3) uint8 array, their
names, the OpenCV intrinsics K (pixel centre of row r, col c at uv = (c, r)) and, for a
sequence folder in our format (:mod:`facesfm.data.format`), the :class:`Sequence` with its
ground truth (used by the oracle switches and for evaluation).

Intrinsics, first that applies: ``intrinsics`` (fx, fy, cx, cy) or ``focal`` given by the user,
the sequence's K, the 35 mm equivalent focal length in the photos' EXIF
(:func:`exif_focal_35mm`), else the documented default guess :func:`default_intrinsics`
(focal = 1.2 * max(W, H) px, principal point at the image centre ((W - 1) / 2, (H - 1) / 2)),
which ``facesfm solve`` then refines (:mod:`facesfm.solvers.focal`).

Bad input raises :class:`facesfm.errors.InputError` with one line naming the culprit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from facesfm.data.format import Sequence, load_sequence, read_image
from facesfm.errors import InputError
from facesfm.geometry.camera import intrinsics as centred_intrinsics
from facesfm.solve.frontend import Crop

__all__ = [
    "DEFAULT_FOCAL_FACTOR",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "FrameSet",
    "default_intrinsics",
    "exif_focal_35mm",
    "is_video",
    "load_input",
    "parse_intrinsics",
    "read_image_folder",
    "read_video",
    "video_frame_name",
]

DEFAULT_FOCAL_FACTOR = 1.2
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")
VIDEO_HINT = (
    "video decoding needs imageio with an ffmpeg backend: pip install imageio imageio-ffmpeg"
)


@dataclass(frozen=True)
class FrameSet:
    """The frames to reconstruct from.

    images:   (F, H, W, 3) uint8 RGB.
    names:    F file names (used in cameras.json and the COLMAP export).
    K:        (3, 3) float64 OpenCV intrinsics shared by all frames.
    source:   "sequence", "images" or "video".
    path:     the input path.
    sequence: the facesfm :class:`Sequence` (ground truth) for a sequence folder, else None.
    K_source: where K came from: "option", "sequence", "exif", "default" (the guess) or
              "estimated" (by the solve, from the guess).
    principal_point_given: whether K's principal point was given (``--intrinsics``, a
              sequence's K) rather than taken at the frame's centre (``--focal``, EXIF, the
              guess and the estimate): a cropped photo's is not at its centre, and taking
              it there tilts every camera by about atan(offset / focal) while the cloud
              stays put, which no check of the solve can see.
    crop:     the :class:`~facesfm.solve.frontend.Crop` the images and K were taken through
              from the original frames (None: the frames as read).
    face_mesh: (F, 468, 3) the face MediaPipe found in each frame, in these images' pixels
              (u, v, relative depth z; None where the front end did not run).
    detector_crops: one :class:`~facesfm.solve.frontend.Crop` per frame, in these images'
              pixels, where the landmark detector sees each frame through its own framing of
              the face (a face that wanders across the capture,
              :func:`facesfm.solve.frontend.frame_crops`); None: it sees the images.
    input_index, input_count: where frames were dropped while reading (a video read keyframe
              by keyframe), the (F,) positions of these frames among the ``input_count``
              frames of the input; None: these are all the input's frames, in order.
    """

    images: np.ndarray
    names: tuple[str, ...]
    K: np.ndarray
    source: str
    path: Path
    sequence: Sequence | None = None
    K_source: str = "default"
    crop: Crop | None = None
    principal_point_given: bool = False
    face_mesh: np.ndarray | None = None
    detector_crops: tuple[Crop, ...] | None = None
    input_index: np.ndarray | None = None
    input_count: int | None = None

    @property
    def num_frames(self) -> int:
        return int(self.images.shape[0])

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    def select(self, keep: np.ndarray) -> FrameSet:
        """The frames where ``keep`` (F,) bool is true (names and images only; the sequence
        stays whole: callers index its ground truth with the same mask)."""
        keep = np.asarray(keep, dtype=bool)
        return replace(self, images=self.images[keep],
                       names=tuple(n for n, k in zip(self.names, keep) if k),
                       face_mesh=None if self.face_mesh is None else self.face_mesh[keep],
                       detector_crops=None if self.detector_crops is None else tuple(
                           c for c, k in zip(self.detector_crops, keep) if k),
                       input_index=None if self.input_index is None else self.input_index[keep])

    def in_input(self, keep: np.ndarray) -> np.ndarray:
        """(input frames,) bool: the input frames that ``keep`` (F,) bool marks among these."""
        keep = np.asarray(keep, dtype=bool)
        if self.input_index is None:
            return keep.copy()
        out = np.zeros(self.input_count, dtype=bool)
        out[self.input_index[keep]] = True
        return out

    @property
    def K_original(self) -> np.ndarray:
        """K in the original frames' pixels (the frames as read, before any crop)."""
        return self.K if self.crop is None else self.crop.K_to_original(self.K)

    @property
    def original_size(self) -> tuple[int, int]:
        """(width, height) of the original frames."""
        return (self.width, self.height) if self.crop is None else (self.crop.width,
                                                                     self.crop.height)


def default_intrinsics(width: int, height: int,
                       focal_factor: float = DEFAULT_FOCAL_FACTOR) -> np.ndarray:
    """The default guess when nothing is known: f = focal_factor * max(W, H) px (1.2, a
    ~45 degree field of view across the longer side), principal point at the centre."""
    return centred_intrinsics(focal_factor * max(width, height), width, height)


def parse_intrinsics(text: str, width: int, height: int) -> np.ndarray:
    """K from ``--intrinsics``: "f", "f,cx,cy" or "fx,fy,cx,cy" (px, OpenCV pixel centres)."""
    try:
        vals = [float(x) for x in str(text).replace(" ", "").split(",") if x != ""]
    except ValueError:
        vals = []
    if len(vals) not in (1, 3, 4) or not all(np.isfinite(vals)):
        raise InputError(f"--intrinsics {text}: expected f, f,cx,cy or fx,fy,cx,cy in pixels")
    if len(vals) == 1:
        fx = fy = vals[0]
        cx, cy = centred_intrinsics(fx, width, height)[:2, 2]
    elif len(vals) == 3:
        fx = fy = vals[0]
        cx, cy = vals[1:]
    else:
        fx, fy, cx, cy = vals
    if not (fx > 0 and fy > 0):
        raise InputError(f"--intrinsics {text}: focal lengths must be > 0 px")
    if not (np.isfinite(cx) and np.isfinite(cy)):
        raise InputError(f"--intrinsics {text}: the principal point must be finite")
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _check_sizes(images: list[np.ndarray], names: list[str], where: Path) -> np.ndarray:
    first = images[0].shape[:2]
    for im, name in zip(images, names):
        if im.shape[:2] != first:
            raise InputError(
                f"{where}: mixed image sizes: {name} is {im.shape[1]}x{im.shape[0]}, "
                f"{names[0]} is {first[1]}x{first[0]}"
            )
    return np.stack(images)


def _check_count(n: int, where: Path, what: str, one: str) -> None:
    """``what``: the plural as the error names it ("images (.png, .jpg, ...)"); ``one``: the
    singular ("image")."""
    if n == 0:
        raise InputError(f"{where}: no {what} found")
    if n < 2:
        raise InputError(f"{where}: only 1 {one}; "
                         "structure from motion needs at least 2 frames")


FULL_FRAME_DIAGONAL_MM = float(np.hypot(36.0, 24.0))


def exif_focal_35mm(path: Path) -> float | None:
    """The 35 mm equivalent focal length (mm) an image file's EXIF gives, or None."""
    from PIL import ExifTags, Image

    try:
        with Image.open(path) as im:
            value = im.getexif().get_ifd(ExifTags.IFD.Exif).get(
                ExifTags.Base.FocalLengthIn35mmFilm)
    except (OSError, ValueError, SyntaxError):  # no or damaged EXIF: as if absent
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def exif_intrinsics(files: list[Path], width: int, height: int) -> np.ndarray | None:
    """K from the photos' 35 mm equivalent focal length: f px = f35 x the image diagonal /
    the 43.3 mm diagonal of a 36 x 24 mm frame, principal point at the centre. None where no
    photo gives one; InputError where two give different ones (one K is solved for all)."""
    found = {p.name: f for p in files if (f := exif_focal_35mm(p)) is not None}
    if not found:
        return None
    lo, hi = min(found, key=found.get), max(found, key=found.get)
    if found[hi] > 1.01 * found[lo]:
        raise InputError(f"the photos' EXIF give different focal lengths ({lo}: {found[lo]:g} "
                         f"mm, {hi}: {found[hi]:g} mm, 35 mm equivalent); one K is solved "
                         f"for all frames: give photos of one zoom setting, or --focal")
    f35 = float(np.median(list(found.values())))
    return centred_intrinsics(f35 * float(np.hypot(width, height)) / FULL_FRAME_DIAGONAL_MM,
                              width, height)


def read_image_folder(path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """(F, H, W, 3) uint8 frames of the images in ``path`` sorted by name, and their names."""
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    _check_count(len(files), path, "images (.png, .jpg, ...)", "image")
    images = [read_image(p) for p in files]
    names = [p.name for p in files]
    return _check_sizes(images, names, path), tuple(names)


def video_frame_name(position: int) -> str:
    """The name of a video's frame at ``position`` (frame_000012.png) in every output."""
    return f"frame_{position:06d}.png"


def is_video(path: str | Path) -> bool:
    """Whether ``path`` is a file ``load_input`` reads as a video (by its extension)."""
    path = Path(path)
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def read_video(path: Path, max_frames: int | None = None, keep=None
               ) -> tuple[np.ndarray, tuple[str, ...], np.ndarray, int]:
    """The frames of a video file (imageio), decoded one at a time: (images (F, H, W, 3)
    uint8, names frame_000000.png ... by their position in the video, positions (F,), the
    number of frames decoded). ``keep``: a function (position, frame) -> bool deciding, as
    each frame is decoded, whether to keep it (None: all), so that only the kept frames are
    ever held in memory; ``max_frames``: decode at most this many."""
    try:
        import imageio.v3 as iio
    except ImportError:
        raise InputError(f"{path}: cannot read video: {VIDEO_HINT}") from None
    frames, index, count = [], [], 0
    try:
        for i, fr in enumerate(iio.imiter(path)):
            if max_frames is not None and i >= max_frames:
                break
            count = i + 1
            fr = np.asarray(fr)
            if fr.ndim == 2:
                fr = np.repeat(fr[..., None], 3, axis=2)
            fr = np.ascontiguousarray(fr[..., :3]).astype(np.uint8, copy=False)
            if keep is None or keep(i, fr):
                frames.append(fr)
                index.append(i)
    except ImportError as e:  # a plugin (e.g. pyav / imageio-ffmpeg) is missing
        raise InputError(f"{path}: cannot decode video ({e}); {VIDEO_HINT}") from None
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - imageio raises many kinds for undecodable data
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "backend" in msg.lower():  # no installed plugin reads this container/codec
            raise InputError(f"{path}: cannot decode this video here (no imageio backend for "
                             f"{path.suffix}); {VIDEO_HINT}") from None
        raise InputError(f"{path}: undecodable video ({msg})") from None
    _check_count(count, path, "video frames", "video frame")
    names = [video_frame_name(i) for i in index]
    images = (_check_sizes(frames, names, path) if frames  # none kept: empty, the video's size
              else np.zeros((0, *fr.shape), dtype=np.uint8))
    return images, tuple(names), np.asarray(index, dtype=np.int64), count


def load_input(path: str | Path, focal: float | None = None, intrinsics: str | None = None,
               max_frames: int | None = None, video_keep=None) -> FrameSet:
    """Read ``path`` (sequence folder, image folder or video file) into a :class:`FrameSet`.

    focal:      focal length in px (principal point at the centre); exclusive with intrinsics.
    intrinsics: "f", "f,cx,cy" or "fx,fy,cx,cy" (px).
    max_frames: decode at most this many frames of a video.
    video_keep: for a video, a function (position, frame) -> bool choosing the frames to keep
                as they are decoded (:func:`read_video`); the FrameSet then records their
                positions (``input_index``, ``input_count``).
    """
    path = Path(path)
    if focal is not None and intrinsics is not None:
        raise InputError("--focal and --intrinsics both given: use one of them")
    if focal is not None and not (np.isfinite(focal) and focal > 0):
        raise InputError(f"--focal must be a finite number > 0 px, got {focal}")
    if not path.exists():
        raise InputError(f"input not found: {path}")
    seq = None
    if path.is_dir() and (path / "sequence.json").is_file():
        seq = load_sequence(path)
        _check_count(len(seq), path, "frames", "frame")
        images = [seq.image(i) for i in range(len(seq))]
        images = np.stack(images)
        names = tuple(p.name for p in seq.image_paths)
        source = "sequence"
    elif path.is_dir():
        images, names = read_image_folder(path)
        source = "images"
    elif path.suffix.lower() in VIDEO_EXTENSIONS:
        images, names, index, count = read_video(path, max_frames, video_keep)
        source = "video"
    elif path.suffix.lower() in IMAGE_EXTENSIONS:
        raise InputError(f"{path}: a single image; structure from motion needs at least 2 "
                         "frames (give a folder of images or a video)")
    else:
        raise InputError(f"{path}: not a sequence folder, image folder or video "
                         f"({', '.join(VIDEO_EXTENSIONS)})")
    H, W = images.shape[1:3]
    if intrinsics is not None:
        K, K_source = parse_intrinsics(intrinsics, W, H), "option"
    elif focal is not None:
        K, K_source = centred_intrinsics(float(focal), W, H), "option"
    elif seq is not None:
        K, K_source = np.asarray(seq.K, dtype=np.float64), "sequence"
    elif source == "images" and (K := exif_intrinsics([path / n for n in names], W, H)) \
            is not None:
        K_source = "exif"
    else:
        K, K_source = default_intrinsics(W, H), "default"
    given = intrinsics is not None or (focal is None and seq is not None)
    if source == "video" and video_keep is not None:
        return FrameSet(images, names, K, source, path, seq, K_source, input_index=index,
                        input_count=count, principal_point_given=given)
    return FrameSet(images, names, K, source, path, seq, K_source,
                    principal_point_given=given)

"""Frozen configuration of the renderer: camera trajectory, lighting, image and output options.

Every random quantity is drawn from the sequence seed, so a (config, seed) pair names one
sequence exactly. Ranges are ``(low, high)`` pairs sampled uniformly per sequence; a fixed
value is a range with equal ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from facesfm.errors import InputError
from facesfm.faces.types import LANDMARK_COUNTS
from facesfm.render.appearance_config import (  # the appearance section, re-exported
    APPEARANCE_PRESETS,
    HELD_OUT_PHOTOS,
    PHOTOS,
    REALISTIC_APPEARANCE,
    VARIED_APPEARANCE,
    AppearanceConfig,
    CameraEffectsConfig,
    LightRigConfig,
    OccluderConfig,
    PhotoBackgroundConfig,
    SkinVariationConfig,
    _check_range,
    draw_range,
)

#: Landmark occlusion tests (see :func:`facesfm.render.visibility.landmark_visibility`).
OCCLUSION_RULES = ("front", "bilinear")

__all__ = [
    "APPEARANCE_PRESETS",
    "BACKGROUNDS",
    "FACE_SOURCES",
    "HELD_OUT_PHOTOS",
    "PHOTOS",
    "REALISTIC_APPEARANCE",
    "VARIED_APPEARANCE",
    "AppearanceConfig",
    "BatchConfig",
    "CameraEffectsConfig",
    "LightRigConfig",
    "LightingConfig",
    "OccluderConfig",
    "PhotoBackgroundConfig",
    "RenderConfig",
    "SkinVariationConfig",
    "TrajectoryConfig",
    "draw_range",
]

#: Background kinds: a constant colour, seeded per-pixel noise (smoothed), a seeded linear
#: gradient, or "random" (noise or gradient chosen by the seed).
BACKGROUNDS = ("color", "noise", "gradient", "random")


@dataclass(frozen=True)
class TrajectoryConfig:
    """A yaw sweep of a camera around the head (the paper's "rotate every 2 degrees").

    The camera sits on a sphere of radius ``distance`` around ``target`` and looks at it.
    Yaw is the azimuth about the world +y axis: yaw 0 looks at the face from the front (camera
    on +z), positive yaw moves the camera towards world +x. Pitch is the elevation: positive
    puts the camera above the head looking down. Roll turns the camera about its optical axis:
    camera-frame points are rotated by Rz(roll), so positive roll turns the image content
    clockwise on screen (x towards +y, which points down).

    yaw_min, yaw_max: ends of the sweep in degrees.
    step:             yaw step in degrees; the sweep has round((max - min) / step) + 1 frames.
    frames:           if set, exactly this many frames spread evenly over [yaw_min, yaw_max]
                      (``step`` is then ignored).
    distance:         camera distance to ``target`` in mm (500 mm with focal 500 px puts a
                      ~230 mm tall head inside a 384 px frame).
    distance_jitter:  per-frame uniform jitter of the distance, +- mm.
    pitch:            constant pitch in degrees, or the start of a linear sweep ...
    pitch_end:        ... to this pitch at the last frame (None: constant pitch).
    roll_jitter:      per-frame uniform roll in +- degrees.
    yaw_jitter:       irregular steps: each yaw moves by a uniform +- ``yaw_jitter * step``
                      (must be < 0.5 so the sweep stays monotonic).
    every:            keep every k-th frame of the sweep.
    indices:          keep only these sweep indices (0-based, in any order, no repeats);
                      exclusive with ``every``.
    target:           the point looked at (world mm); None = centre of the mesh's bounding box.

    Per-sequence variation (drawn once per sequence from its seed, so that sequences of one
    dataset do not all follow the same path; all off by default):

    direction:        "rising" (yaw_min to yaw_max, default), "falling" (the reverse) or
                      "random" (chosen per sequence).
    yaw_shift:        the whole yaw range moves by a uniform +- ``yaw_shift`` degrees.
    speed_jitter:     the yaw range is scaled about its centre by a uniform factor in
                      [1 - s, 1 + s] with the frame count kept, so degrees per frame vary.
    ease:             uneven speed within the sweep: normalised time t is warped to
                      t - e sin(2 pi t) / (2 pi) with e uniform in [0, ease] (slow at both
                      ends, fast in the middle; < 1 keeps the sweep monotonic).
    pitch_spread:     the pitch at the first and at the last frame each move by a uniform
                      +- ``pitch_spread`` degrees (a tilted, climbing or descending sweep).
    """

    yaw_min: float = -60.0
    yaw_max: float = 60.0
    step: float = 2.0
    frames: int | None = None
    distance: float = 500.0
    distance_jitter: float = 0.0
    pitch: float = 0.0
    pitch_end: float | None = None
    roll_jitter: float = 0.0
    yaw_jitter: float = 0.0
    every: int = 1
    indices: tuple[int, ...] | None = None
    target: tuple[float, float, float] | None = None
    direction: str = "rising"
    yaw_shift: float = 0.0
    speed_jitter: float = 0.0
    ease: float = 0.0
    pitch_spread: float = 0.0

    def __post_init__(self):
        if self.direction not in ("rising", "falling", "random"):
            raise InputError(f"trajectory: direction must be rising, falling or random, "
                             f"got {self.direction!r}")
        if self.yaw_shift < 0:
            raise InputError(f"trajectory: yaw_shift must be >= 0, got {self.yaw_shift}")
        if not 0 <= self.speed_jitter < 1:
            raise InputError(f"trajectory: speed_jitter must be in [0, 1), "
                             f"got {self.speed_jitter}")
        if not 0 <= self.ease < 1:
            raise InputError(f"trajectory: ease must be in [0, 1), got {self.ease}")
        if self.pitch_spread < 0:
            raise InputError(f"trajectory: pitch_spread must be >= 0, got {self.pitch_spread}")
        if not self.yaw_max >= self.yaw_min:
            raise InputError(f"trajectory: yaw_max ({self.yaw_max}) < yaw_min ({self.yaw_min})")
        if self.frames is None and not self.step > 0:
            raise InputError(f"trajectory: step must be > 0, got {self.step}")
        if self.frames is not None and self.frames < 1:
            raise InputError(f"trajectory: frames must be >= 1, got {self.frames}")
        if not self.distance > 0:
            raise InputError(f"trajectory: distance must be > 0 mm, got {self.distance}")
        if not 0 <= self.distance_jitter < self.distance:
            raise InputError(f"trajectory: distance_jitter must be in [0, distance), "
                             f"got {self.distance_jitter}")
        if not 0 <= self.yaw_jitter < 0.5:
            raise InputError(f"trajectory: yaw_jitter must be in [0, 0.5), got {self.yaw_jitter}")
        if self.roll_jitter < 0:
            raise InputError(f"trajectory: roll_jitter must be >= 0, got {self.roll_jitter}")
        if self.every < 1:
            raise InputError(f"trajectory: every must be >= 1, got {self.every}")
        if self.indices is not None and self.every != 1:
            raise InputError("trajectory: give either indices or every, not both")
        if self.target is not None and len(self.target) != 3:
            raise InputError(f"trajectory: target must be 3 numbers, got {self.target}")


@dataclass(frozen=True)
class LightingConfig:
    """Lambertian lighting fixed in the world frame: ambient + one key + one fill light.

    Each field is a (low, high) range sampled once per sequence from its seed. Shading is
    computed per vertex in linear light and is view-independent, so a surface point has the
    same colour in every frame (brightness constancy, which a photometric loss relies on).

    ambient:        ambient intensity.
    key:            intensity of the key directional light.
    key_azimuth:    key light direction azimuth in degrees (0 = from the front, + = from +x).
    key_elevation:  key light elevation in degrees (+ = from above).
    fill:           intensity of the fill light, from the mirrored azimuth and elevation 0.
    temperature:    colour temperature of the lights in kelvin (6500 = neutral white).
    """

    ambient: tuple[float, float] = (0.30, 0.50)
    key: tuple[float, float] = (0.55, 0.85)
    key_azimuth: tuple[float, float] = (-50.0, 50.0)
    key_elevation: tuple[float, float] = (0.0, 45.0)
    fill: tuple[float, float] = (0.0, 0.25)
    temperature: tuple[float, float] = (4500.0, 7500.0)

    def __post_init__(self):
        for name in ("ambient", "key", "key_azimuth", "key_elevation", "fill", "temperature"):
            _check_range(f"lighting.{name}", getattr(self, name))
        if self.temperature[0] < 1000 or self.temperature[1] > 40000:
            raise InputError(f"lighting.temperature: outside 1000..40000 K: {self.temperature}")
        if min(self.ambient[0], self.key[0], self.fill[0]) < 0:
            raise InputError("lighting: intensities must be >= 0")


@dataclass(frozen=True)
class RenderConfig:
    """Everything that decides how one sequence is rendered and written.

    width, height:      image size in pixels.
    focal:              focal length in pixels (square pixels, principal point at the centre).
    focal_spread:       per-sequence lens: where > 1, each sequence's focal length is
                        ``focal`` times a factor drawn log-uniformly in [1 / spread, spread]
                        from its seed, and the camera's distance (with its jitter) times the
                        same factor, so the head fills the frame as at ``focal`` and only the
                        perspective differs (a phone at arm's length to a longer lens further
                        away). 1: every sequence at ``focal`` (no draw: renders as before it).
    landmarks:          number of landmark IDs stored (one of LANDMARK_COUNTS).
    background:         one of BACKGROUNDS.
    background_color:   RGB 0..255 used by "color".
    occlusion:          the landmark occlusion test, one of OCCLUSION_RULES (see
                        facesfm.render.visibility): "front" hides a landmark only behind a
                        surface more than depth_tolerance in front of it at all 4 pixel
                        centres around it; "bilinear" (the rule before 2026-12) asks the
                        bilinear depth at uv to equal its z within depth_tolerance (0.5 mm
                        was its default).
    depth_tolerance:    occlusion tolerance (mm) of that test.
    facing_radius:      the facing test uses the normal of the surface patch within this
                        radius (mm) of the landmark (facesfm.geometry.mesh.patch_normals);
                        0 uses the landmark's vertex normal (the rule before 2026-12-06,
                        which hid the closed-lip seam landmarks whenever their vertex normal,
                        pointing into the mouth, turned away from the camera).
    edge_margin:        a visible landmark lies at least this many pixels inside the image.
    png_compress_level: zlib level for PNGs (1 = fast; files are larger).
    expression:         ask the face model for a random expression.
    write_mesh:         write mesh.ply (ground-truth mesh, world frame, mm).
    write_colmap:       write colmap/*.txt.
    znear_margin:       clip planes: the head's bounding sphere +- this margin (mm).
    trajectory:         the camera path (TrajectoryConfig).
    lighting:           the light ranges (LightingConfig).
    appearance:         photographs behind the head and camera effects (AppearanceConfig,
                        off by default).
    """

    width: int = 384
    height: int = 384
    focal: float = 500.0
    focal_spread: float = 1.0
    landmarks: int = 800
    background: str = "random"
    background_color: tuple[int, int, int] = (0, 0, 0)
    occlusion: str = "front"
    depth_tolerance: float = 2.0
    facing_radius: float = 2.5
    edge_margin: float = 1.0
    png_compress_level: int = 1
    expression: bool = False
    write_mesh: bool = True
    write_colmap: bool = True
    znear_margin: float = 10.0
    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    lighting: LightingConfig = field(default_factory=LightingConfig)
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)

    def __post_init__(self):
        if not (8 <= self.width <= 8192 and 8 <= self.height <= 8192):
            raise InputError(f"render: image size must be 8..8192 px, got "
                             f"{self.width}x{self.height}")
        if not (math.isfinite(self.focal) and self.focal > 0):
            raise InputError(f"render: focal must be a finite number > 0 px, got {self.focal}")
        if not (math.isfinite(self.focal_spread) and self.focal_spread >= 1):
            raise InputError(f"render: focal_spread must be a finite number >= 1, got "
                             f"{self.focal_spread}")
        if self.landmarks not in LANDMARK_COUNTS:
            raise InputError(
                f"render: landmarks={self.landmarks} is not one of {list(LANDMARK_COUNTS)}"
            )
        if self.background not in BACKGROUNDS:
            raise InputError(f"render: background={self.background!r} is not one of "
                             f"{list(BACKGROUNDS)}")
        if len(self.background_color) != 3:
            raise InputError(f"render: background_color must be RGB, got "
                             f"{self.background_color}")
        if self.occlusion not in OCCLUSION_RULES:
            raise InputError(f"render: occlusion={self.occlusion!r} is not one of "
                             f"{list(OCCLUSION_RULES)}")
        if not self.depth_tolerance > 0:
            raise InputError(f"render: depth_tolerance must be > 0 mm, got "
                             f"{self.depth_tolerance}")
        if not self.facing_radius >= 0:
            raise InputError(f"render: facing_radius must be >= 0 mm, got {self.facing_radius}")
        if self.edge_margin < 0:
            raise InputError(f"render: edge_margin must be >= 0, got {self.edge_margin}")
        if not 0 <= self.png_compress_level <= 9:
            raise InputError(f"render: png_compress_level must be 0..9, got "
                             f"{self.png_compress_level}")
        if not self.znear_margin > 0:
            raise InputError(f"render: znear_margin must be > 0, got {self.znear_margin}")


FACE_SOURCES = ("builtin", "ict", "mesh")


@dataclass(frozen=True)
class BatchConfig:
    """``facesfm render``: many subjects x sequences of one face source.

    faces:                 "builtin" (procedural, no data), "ict" (ICT-FaceKit) or "mesh".
    mesh, units, orient:   the user mesh for faces="mesh" (file, its length unit, which axis
                           its face looks down; see facesfm.faces.mesh).
    allow_untextured:      render a user mesh with neither a UV texture nor vertex colours in
                           a plain skin tone (off by default: the photometric loss needs an
                           informative texture, so such a mesh is an error).
    ict_dir:               ICT-FaceKit folder (None: FACESFM_ICT_DIR or ../shared/ict-facekit).
    subjects:              number of faces (face seeds derive from ``seed`` and the subject).
    sequences_per_subject: sequences rendered of each face (own trajectory/light seeds).
    seed:                  master seed.
    workers:               processes; each owns one renderer.
    render:                the per-sequence options.
    """

    faces: str = "builtin"
    mesh: str | None = None
    units: str = "mm"
    scale: float = 1.0
    orient: str | None = None
    allow_untextured: bool = False
    ict_dir: str | None = None
    subjects: int = 1
    sequences_per_subject: int = 1
    seed: int = 0
    workers: int = 1
    render: RenderConfig = field(default_factory=RenderConfig)

    def __post_init__(self):
        if self.faces not in FACE_SOURCES:
            raise InputError(f"--faces {self.faces}: choose one of {list(FACE_SOURCES)}")
        if self.faces == "mesh" and not self.mesh:
            raise InputError("--faces mesh needs --mesh PATH")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise InputError(f"--scale must be a finite number > 0, got {self.scale}")
        if self.units not in ("mm", "cm", "m"):
            raise InputError(f"--units {self.units}: choose one of ['mm', 'cm', 'm']")
        if self.subjects < 1:
            raise InputError(f"--subjects must be >= 1, got {self.subjects}")
        if self.sequences_per_subject < 1:
            raise InputError(
                f"--sequences-per-subject must be >= 1, got {self.sequences_per_subject}"
            )
        if self.workers < 1:
            raise InputError(f"--workers must be >= 1, got {self.workers}")

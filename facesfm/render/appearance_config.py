"""Frozen configuration of the appearance randomisation (``BatchConfig.appearance``):
photographic backgrounds, camera effects, light rigs, skin variation and occluders, with the
named presets (training's ``varied``, the realistic held-out set's ``realistic``).

Every random quantity is drawn from the sequence seed (:func:`draw_range`); ranges are
``(low, high)`` pairs sampled uniformly per sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from facesfm.errors import InputError

__all__ = [
    "APPEARANCE_PRESETS",
    "HELD_OUT_PHOTOS",
    "PHOTOS",
    "REALISTIC_APPEARANCE",
    "VARIED_APPEARANCE",
    "AppearanceConfig",
    "CameraEffectsConfig",
    "LightRigConfig",
    "OccluderConfig",
    "PhotoBackgroundConfig",
    "SkinVariationConfig",
    "draw_range",
]


#: Photographs of scikit-image's data module used as backgrounds: scenes and textures with no
#: person or face in them (left out: astronaut and camera show people, coins carries heads,
#: chelsea is a close-up of a cat's eyes and nose, retina looks like an eye).
PHOTOS = ("coffee", "rocket", "stereo_motorcycle", "hubble_deep_field", "brick", "grass",
          "gravel", "moon", "clock", "text")


def draw_range(rng, lo_hi) -> float:
    """A value drawn uniformly from the config range ``lo_hi`` (low, high) with the numpy
    Generator ``rng``; ``low`` itself, drawing nothing, when the range is one value (so an
    effect turned off does not shift the stream's later draws)."""
    lo, hi = lo_hi
    return float(lo) if lo == hi else float(rng.uniform(lo, hi))


def _check_range(where: str, lo_hi, low: float = -math.inf, high: float = math.inf) -> None:
    """InputError unless ``lo_hi`` is a finite (low, high) pair with low <= high inside
    [low, high]."""
    if (len(lo_hi) != 2 or not all(math.isfinite(v) for v in lo_hi)
            or not low <= lo_hi[0] <= lo_hi[1] <= high):
        raise InputError(f"{where}: expected a (low, high) range within [{low:g}, {high:g}], "
                         f"got {lo_hi}")


@dataclass(frozen=True)
class PhotoBackgroundConfig:
    """Photographs behind the head instead of ``RenderConfig.background`` (detectors
    trained on our own backgrounds put landmarks on the background of a real photograph).

    Drawn once per sequence from its seed: whether it gets a photograph, which one, its crop,
    flip and colour. The camera circles a still head, which is the same as a head turning in
    front of a still camera (the capture ``facesfm solve`` takes), so the background stays
    the same in every frame of a sequence.

    probability: share of sequences with a photograph (0, the default: none; the others keep
                 ``RenderConfig.background``).
    photos:      names from PHOTOS (scikit-image's data module), chosen uniformly.
    zoom:        the crop is the largest window of the image's aspect ratio in the photo,
                 shrunk by a factor drawn from this range (>= 1), at a uniform position.
    flip:        mirror the crop left-right with probability 1/2.
    brightness:  gain on the photograph (sRGB).
    contrast:    scale about the photograph's mean.
    saturation:  blend with its grey image (0 grey, 1 unchanged).
    tint:        each channel's gain is exp(u), u uniform in [-tint, tint] (a colour cast;
                 it also colours the grey photographs).
    blur:        Gaussian sigma in px: the background lies behind the plane in focus.
    """

    probability: float = 0.0
    photos: tuple[str, ...] = PHOTOS
    zoom: tuple[float, float] = (1.0, 3.0)
    flip: bool = True
    brightness: tuple[float, float] = (0.6, 1.3)
    contrast: tuple[float, float] = (0.6, 1.3)
    saturation: tuple[float, float] = (0.3, 1.3)
    tint: float = 0.15
    blur: tuple[float, float] = (0.0, 2.0)

    def __post_init__(self):
        w = "appearance.background"
        if not 0 <= self.probability <= 1:
            raise InputError(f"{w}.probability must be in [0, 1], got {self.probability}")
        unknown = sorted(set(self.photos) - set(PHOTOS) - set(HELD_OUT_PHOTOS))
        if not self.photos or unknown:
            raise InputError(f"{w}.photos: {unknown or 'none given'}; choose from "
                             f"{list(PHOTOS + HELD_OUT_PHOTOS)}")
        _check_range(f"{w}.zoom", self.zoom, 1.0, 100.0)
        _check_range(f"{w}.brightness", self.brightness, 0.0, 10.0)
        _check_range(f"{w}.contrast", self.contrast, 0.0, 10.0)
        _check_range(f"{w}.saturation", self.saturation, 0.0, 10.0)
        if not 0 <= self.tint <= 2:
            raise InputError(f"{w}.tint must be in [0, 2], got {self.tint}")
        _check_range(f"{w}.blur", self.blur, 0.0, 100.0)


@dataclass(frozen=True)
class CameraEffectsConfig:
    """An imperfect camera: effects applied to the rendered RGB image only (depth, masks,
    landmarks, K and poses stay exact), in the order light meets them, in linear light
    (sRGB taken as gamma 2.2, as the renderer writes it).

    Drawn once per sequence from its seed, since one camera shoots a whole sequence: focus,
    vignetting, exposure, sensor noise level, white balance and JPEG quality. Motion blur is
    the world moving during the exposure and is drawn per frame. Each field is a (low, high)
    range (px, stops or linear-light units as said); (0, 0) turns that effect off.

    probability:   share of sequences shot through this camera (0, the default: none; the
                   others are written as rendered).
    motion_blur:   per frame, a line blur of this length in px at a uniform direction.
    defocus:       radius in px of the lens's disk blur.
    vignetting:    light lost in the image corners (fraction; falls off with r^2 from the
                   centre).
    exposure:      exposure error in stops (gain 2**stops; highlights clip).
    noise:         read noise: Gaussian sigma in linear light (1 = white).
    shot_noise:    signal-dependent noise: its variance is this times the linear intensity.
    white_balance: the red and the blue gain relative to green are each 2**stops, stops
                   drawn from this range.
    jpeg_quality:  the image is JPEG-compressed at a quality drawn from this range (1..100)
                   and decoded again; None: no compression.
    """

    probability: float = 0.0
    motion_blur: tuple[float, float] = (0.0, 3.0)
    defocus: tuple[float, float] = (0.0, 1.5)
    vignetting: tuple[float, float] = (0.0, 0.4)
    exposure: tuple[float, float] = (-0.5, 0.5)
    noise: tuple[float, float] = (0.0, 0.006)
    shot_noise: tuple[float, float] = (0.0, 0.002)
    white_balance: tuple[float, float] = (-0.2, 0.2)
    jpeg_quality: tuple[int, int] | None = (40, 95)

    def __post_init__(self):
        w = "appearance.camera"
        if not 0 <= self.probability <= 1:
            raise InputError(f"{w}.probability must be in [0, 1], got {self.probability}")
        _check_range(f"{w}.motion_blur", self.motion_blur, 0.0, 100.0)
        _check_range(f"{w}.defocus", self.defocus, 0.0, 50.0)
        _check_range(f"{w}.vignetting", self.vignetting, 0.0, 1.0)
        _check_range(f"{w}.exposure", self.exposure, -5.0, 5.0)
        _check_range(f"{w}.noise", self.noise, 0.0, 1.0)
        _check_range(f"{w}.shot_noise", self.shot_noise, 0.0, 1.0)
        _check_range(f"{w}.white_balance", self.white_balance, -3.0, 3.0)
        if self.jpeg_quality is not None:
            _check_range(f"{w}.jpeg_quality", self.jpeg_quality, 1, 100)


@dataclass(frozen=True)
class LightRigConfig:
    """More light than ``RenderConfig.lighting``'s key and fill: extra lights of their own
    colour from anywhere in front of and beside the head, a dimmer or brighter ambient, and a
    specular sheen (skin's oily shine), drawn once per sequence from its seed (lights stay
    with the world, the head turns under them).

    The diffuse part stays per vertex and view-independent; the sheen is Blinn-Phong and
    moves with the camera, so frames of such a sequence break brightness constancy (which the
    photometric loss of the depth and pose networks assumes: use it for detector data).

    probability: share of sequences lit this way (0, the default: none).
    lights:      (low, high) number of extra directional lights, drawn as an integer.
    intensity:   each extra light's intensity (the key light's unit).
    azimuth:     its direction's azimuth in degrees (0 = from the front, + = from +x).
    elevation:   its elevation in degrees (+ = from above).
    temperature: its colour temperature in kelvin.
    ambient:     gain on the base lighting's ambient term (< 1: harder light).
    specular:    strength of the sheen, added in linear light (0: none).
    shininess:   Blinn-Phong exponent of the sheen (small: broad, large: tight highlights).
    """

    probability: float = 0.0
    lights: tuple[int, int] = (1, 3)
    intensity: tuple[float, float] = (0.2, 0.9)
    azimuth: tuple[float, float] = (-120.0, 120.0)
    elevation: tuple[float, float] = (-30.0, 75.0)
    temperature: tuple[float, float] = (2700.0, 9000.0)
    ambient: tuple[float, float] = (0.3, 1.2)
    specular: tuple[float, float] = (0.0, 0.35)
    shininess: tuple[float, float] = (8.0, 48.0)

    def __post_init__(self):
        w = "appearance.light"
        if not 0 <= self.probability <= 1:
            raise InputError(f"{w}.probability must be in [0, 1], got {self.probability}")
        _check_range(f"{w}.lights", self.lights, 0, 8)
        _check_range(f"{w}.intensity", self.intensity, 0.0, 10.0)
        _check_range(f"{w}.azimuth", self.azimuth, -180.0, 180.0)
        _check_range(f"{w}.elevation", self.elevation, -90.0, 90.0)
        _check_range(f"{w}.temperature", self.temperature, 1000.0, 40000.0)
        _check_range(f"{w}.ambient", self.ambient, 0.0, 10.0)
        _check_range(f"{w}.specular", self.specular, 0.0, 10.0)
        _check_range(f"{w}.shininess", self.shininess, 1.0, 1000.0)


@dataclass(frozen=True)
class SkinVariationConfig:
    """The face's albedo (texture or vertex colours) changed beyond the range of the face
    source's own skin, drawn once per sequence from its seed; it applies to the textures of
    user meshes as well. sRGB, in this order:

    probability: share of sequences changed (0, the default: none).
    tone:        gain on the albedo (< 1 darker skin, > 1 lighter).
    saturation:  blend with its grey (0 grey, 1 unchanged, > 1 more saturated).
    contrast:    scale about the albedo's mean.
    detail:      gain on the fine detail (the albedo minus its blur of ``detail_sigma``
                 texels: pores, freckles, brows): < 1 smoother skin, > 1 more texture.
    detail_sigma: that blur's Gaussian sigma in texels (vertex colours: in vertices' mean
                 neighbour steps, one smoothing pass per unit).
    tint:        each channel's gain is exp(u), u uniform in [-tint, tint].
    """

    probability: float = 0.0
    tone: tuple[float, float] = (0.45, 1.3)
    saturation: tuple[float, float] = (0.5, 1.6)
    contrast: tuple[float, float] = (0.6, 1.6)
    detail: tuple[float, float] = (0.3, 2.5)
    detail_sigma: float = 3.0
    tint: float = 0.08

    def __post_init__(self):
        w = "appearance.skin"
        if not 0 <= self.probability <= 1:
            raise InputError(f"{w}.probability must be in [0, 1], got {self.probability}")
        for name in ("tone", "saturation", "contrast", "detail"):
            _check_range(f"{w}.{name}", getattr(self, name), 0.0, 10.0)
        if not 0 < self.detail_sigma <= 50:
            raise InputError(f"{w}.detail_sigma must be in (0, 50], got {self.detail_sigma}")
        if not 0 <= self.tint <= 1:
            raise InputError(f"{w}.tint must be in [0, 1], got {self.tint}")


@dataclass(frozen=True)
class OccluderConfig:
    """Things in front of the face, drawn in 3D on the head (so they turn with it) and
    depth-tested against the render: a landmark behind one is labelled hidden by the same
    occlusion test as a landmark behind the face itself. The stored depth and mask stay the
    face's (the geometric ground truth does not change); only the image and the visibility
    labels do.

    strands:     probability that a sequence has hair strands over the forehead;
                 strand_count: how many; strand_width: their width in mm.
    glasses:     probability of spectacle frames; frame_width: rim width in mm.
    hand:        probability that a sequence has a hand-sized blob in front of the face, and
                 hand_frames: the share of that sequence's frames it shows in (drawn per
                 frame); hand_size: its diameter in mm.
    """

    strands: float = 0.0
    strand_count: tuple[int, int] = (3, 14)
    strand_width: tuple[float, float] = (0.4, 1.6)
    glasses: float = 0.0
    frame_width: tuple[float, float] = (1.0, 4.0)
    hand: float = 0.0
    hand_frames: float = 0.15
    hand_size: tuple[float, float] = (60.0, 100.0)

    def __post_init__(self):
        w = "appearance.occluders"
        for name in ("strands", "glasses", "hand", "hand_frames"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"{w}.{name} must be in [0, 1], got {getattr(self, name)}")
        _check_range(f"{w}.strand_count", self.strand_count, 1, 200)
        _check_range(f"{w}.strand_width", self.strand_width, 0.01, 20.0)
        _check_range(f"{w}.frame_width", self.frame_width, 0.01, 20.0)
        _check_range(f"{w}.hand_size", self.hand_size, 1.0, 500.0)

    @property
    def enabled(self) -> bool:
        return max(self.strands, self.glasses, self.hand) > 0


@dataclass(frozen=True)
class AppearanceConfig:
    """Randomised appearance of the rendered images, drawn from the sequence seed
    and recorded in sequence.json ("appearance"). Off by default: a render without it is
    byte for byte what it was before it existed.

    background: photographs behind the head (PhotoBackgroundConfig).
    camera:     an imperfect camera (CameraEffectsConfig).
    light:      extra lights and a specular sheen (LightRigConfig).
    skin:       the albedo's tone, saturation, contrast and detail (SkinVariationConfig).
    occluders:  hair strands, spectacle frames, a hand (OccluderConfig).
    """

    background: PhotoBackgroundConfig = field(default_factory=PhotoBackgroundConfig)
    camera: CameraEffectsConfig = field(default_factory=CameraEffectsConfig)
    light: LightRigConfig = field(default_factory=LightRigConfig)
    skin: SkinVariationConfig = field(default_factory=SkinVariationConfig)
    occluders: OccluderConfig = field(default_factory=OccluderConfig)

    @property
    def enabled(self) -> bool:
        """Whether any sequence can be changed by it."""
        return (self.background.probability > 0 or self.camera.probability > 0
                or self.light.probability > 0 or self.skin.probability > 0
                or self.occluders.enabled)


#: The appearance randomisation ``build_batch_config(vary_appearance=True)`` (and
#: ``facesfm render --vary-appearance``) turns on, the one the shipped ICT detector is trained
#: on: a photograph behind 70% of the sequences, 80% shot through a randomised camera, 60%
#: under extra lights with a sheen, 70% with changed skin, hair strands over 30%, spectacle
#: frames on 25% and a hand in front of the face on 20% (in 15% of their frames). Every part
#: leaves some sequences as they were: plain renders are among what a detector meets.
VARIED_APPEARANCE: dict[str, dict] = {
    "background": {"probability": 0.7},
    "camera": {"probability": 0.8},
    "light": {"probability": 0.6},
    "skin": {"probability": 0.7},
    "occluders": {"strands": 0.3, "glasses": 0.25, "hand": 0.2},
}

#: Photographs of scikit-image's data module kept out of training (VARIED_APPEARANCE draws
#: from PHOTOS): the realistic held-out set's backgrounds.
HELD_OUT_PHOTOS = ("immunohistochemistry", "page", "cell", "checkerboard")

#: The realistic held-out set's appearance, unlike training's: every sequence over one of the
#: held-out photographs, through a worse camera (more blur, noise and JPEG loss, larger
#: exposure and white-balance errors), under harder and more numerous lights with a stronger
#: sheen, and with more occluders.
REALISTIC_APPEARANCE: dict[str, dict] = {
    "background": {"probability": 1.0, "photos": list(HELD_OUT_PHOTOS), "zoom": [1.0, 4.0],
                   "blur": [0.5, 3.0]},
    "camera": {"probability": 1.0, "motion_blur": [1.0, 5.0], "defocus": [0.5, 2.5],
               "vignetting": [0.1, 0.5], "exposure": [-1.0, 1.0], "noise": [0.002, 0.01],
               "shot_noise": [0.001, 0.003], "white_balance": [-0.35, 0.35],
               "jpeg_quality": [30, 80]},
    "light": {"probability": 1.0, "lights": [2, 4], "intensity": [0.5, 1.4],
              "ambient": [0.15, 0.8], "specular": [0.2, 0.6]},
    "skin": {"probability": 1.0},
    "occluders": {"strands": 0.4, "glasses": 0.4, "hand": 0.3, "hand_frames": 0.2},
}

#: Named appearance presets (``build_batch_config(appearance=NAME)``).
APPEARANCE_PRESETS: dict[str, dict[str, dict]] = {
    "varied": VARIED_APPEARANCE, "realistic": REALISTIC_APPEARANCE}

"""Photographs behind the rendered head: scikit-image's offline photographs, cropped, flipped,
colour-shifted and blurred as one sequence's :class:`PhotoBackground` drew them.

scikit-image is optional (facesfm's ``dev`` extra, which ``make install`` installs); it is
imported only when a photograph is asked for, with an install hint when it is missing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from facesfm.render.appearance_config import PhotoBackgroundConfig, draw_range

__all__ = [
    "SKIMAGE_HINT",
    "PhotoBackground",
    "load_photo",
    "photo_background",
    "sample_photo_background",
]

SKIMAGE_HINT = ("photograph backgrounds need scikit-image (its data module ships the photos); "
                "install it with: pip install scikit-image (it is in facesfm's dev extra)")

# luma weights (Rec. 601) for the grey image that saturation blends with
_LUMA = np.array([0.299, 0.587, 0.114])


@functools.cache
def load_photo(name: str) -> np.ndarray:
    """(h, w, 3) uint8 RGB of scikit-image's photograph ``name`` (grey ones as 3 equal
    channels); read once per process. ImportError with an install hint without
    scikit-image."""
    try:
        from skimage import data
    except ImportError as e:
        raise ImportError(SKIMAGE_HINT) from e
    im = getattr(data, name)()
    if isinstance(im, tuple):  # stereo_motorcycle: (left, right, disparity)
        im = im[0]
    im = np.asarray(im)
    if im.ndim == 2:
        im = np.repeat(im[..., None], 3, axis=2)
    out = np.ascontiguousarray(im[..., :3], dtype=np.uint8)
    out.setflags(write=False)  # shared by every sequence of this process
    return out


@dataclass(frozen=True)
class PhotoBackground:
    """One sequence's photograph background, as drawn.

    photo:      the scikit-image name.
    crop:       (x, y, w, h) window in the photograph's pixels (floats; x, y its top-left
                corner), resampled to the image size.
    flip:       mirrored left-right after cropping.
    brightness, contrast, saturation: the colour changes (see PhotoBackgroundConfig).
    tint:       (3,) per-channel gain.
    blur:       Gaussian sigma in output px.
    """

    photo: str
    crop: tuple[float, float, float, float]
    flip: bool
    brightness: float
    contrast: float
    saturation: float
    tint: tuple[float, float, float]
    blur: float

    def to_dict(self) -> dict:
        return {"photo": self.photo, "crop": list(self.crop), "flip": self.flip,
                "brightness": self.brightness, "contrast": self.contrast,
                "saturation": self.saturation, "tint": list(self.tint), "blur": self.blur}


def sample_photo_background(cfg: PhotoBackgroundConfig, rng: np.random.Generator,
                            height: int, width: int) -> PhotoBackground | None:
    """Draw one sequence's background for an image of ``height`` x ``width`` px: None (keep
    the configured procedural background) with probability ``1 - cfg.probability``."""
    if not rng.random() < cfg.probability:
        return None
    name = cfg.photos[int(rng.integers(len(cfg.photos)))]
    ph, pw = load_photo(name).shape[:2]
    aspect = width / height
    w, h = (ph * aspect, float(ph)) if pw / ph > aspect else (float(pw), pw / aspect)
    zoom = draw_range(rng, cfg.zoom)
    w, h = w / zoom, h / zoom
    x, y = float(rng.uniform(0, pw - w)), float(rng.uniform(0, ph - h))
    flip = bool(cfg.flip and rng.random() < 0.5)
    brightness = draw_range(rng, cfg.brightness)
    contrast = draw_range(rng, cfg.contrast)
    saturation = draw_range(rng, cfg.saturation)
    tint = tuple(float(g) for g in np.exp(rng.uniform(-cfg.tint, cfg.tint, 3)))
    blur = draw_range(rng, cfg.blur)
    return PhotoBackground(photo=name, crop=(x, y, w, h), flip=flip, brightness=brightness,
                           contrast=contrast, saturation=saturation, tint=tint, blur=blur)


def photo_background(bg: PhotoBackground, height: int, width: int) -> np.ndarray:
    """(height, width, 3) uint8 background image of ``bg``."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    x, y, w, h = bg.crop
    im = Image.fromarray(load_photo(bg.photo)).resize(
        (width, height), Image.Resampling.BILINEAR, box=(x, y, x + w, y + h))
    a = np.asarray(im, dtype=np.float32) / 255.0
    if bg.flip:
        a = a[:, ::-1]
    mean = a.mean(axis=(0, 1))
    a = (a - mean) * bg.contrast + mean
    grey = (a @ _LUMA.astype(np.float32))[..., None]
    a = grey + (a - grey) * bg.saturation
    a = a * (bg.brightness * np.asarray(bg.tint, dtype=np.float32))
    if bg.blur > 0:
        a = gaussian_filter(a, sigma=(bg.blur, bg.blur, 0), mode="nearest")
    return np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)

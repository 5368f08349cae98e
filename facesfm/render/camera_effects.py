"""An imperfect camera applied to rendered images: motion and defocus blur, vignetting,
exposure error, sensor noise, white-balance error and JPEG compression.

Only the RGB image changes; depth, masks, landmarks, K and poses stay the render's exact
ground truth. The effects act in linear light (the renderer writes sRGB as gamma 2.2), in
the order light meets them: the world moving during the exposure, the lens, the sensor, the
camera's processing. :class:`CameraModel` holds what is fixed for a sequence (one camera
shoots it); :class:`FrameMotion` what changes per frame.

Images are (H, W, 3): uint8 sRGB at the boundary, float32 linear light in 0..1 inside.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from facesfm.render.appearance_config import CameraEffectsConfig, draw_range

__all__ = [
    "CameraModel",
    "FrameMotion",
    "apply_camera",
    "defocus_blur",
    "disk_kernel",
    "jpeg_roundtrip",
    "motion_blur",
    "motion_kernel",
    "sample_camera",
    "sample_motion",
    "sensor_noise",
    "vignetting_gain",
]

GAMMA = 2.2


@dataclass(frozen=True)
class CameraModel:
    """One sequence's camera, as drawn (see CameraEffectsConfig for the units).

    defocus: disk radius px; vignetting: corner light loss (fraction); exposure: stops;
    noise: read-noise sigma; shot_noise: variance per unit linear intensity;
    white_balance: (3,) RGB gains (green 1); jpeg_quality: 1..100 or None.
    """

    defocus: float
    vignetting: float
    exposure: float
    noise: float
    shot_noise: float
    white_balance: tuple[float, float, float]
    jpeg_quality: int | None

    def to_dict(self) -> dict:
        return {"defocus": self.defocus, "vignetting": self.vignetting,
                "exposure": self.exposure, "noise": self.noise, "shot_noise": self.shot_noise,
                "white_balance": list(self.white_balance), "jpeg_quality": self.jpeg_quality}


@dataclass(frozen=True)
class FrameMotion:
    """One frame's motion blur: a line of ``length`` px at ``angle`` degrees (0 = along +u,
    90 = along +v, image axes)."""

    length: float
    angle: float

    def to_dict(self) -> dict:
        return {"length": self.length, "angle": self.angle}


def sample_camera(cfg: CameraEffectsConfig, rng: np.random.Generator) -> CameraModel | None:
    """Draw one sequence's camera: None (an ideal camera, images as rendered) with
    probability ``1 - cfg.probability``."""
    if not rng.random() < cfg.probability:
        return None
    defocus = draw_range(rng, cfg.defocus)
    vignetting = draw_range(rng, cfg.vignetting)
    exposure = draw_range(rng, cfg.exposure)
    noise = draw_range(rng, cfg.noise)
    shot = draw_range(rng, cfg.shot_noise)
    red, blue = (2.0 ** draw_range(rng, cfg.white_balance) for _ in range(2))
    quality = (None if cfg.jpeg_quality is None
               else int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    return CameraModel(defocus=defocus, vignetting=vignetting, exposure=exposure, noise=noise,
                       shot_noise=shot, white_balance=(red, 1.0, blue), jpeg_quality=quality)


def sample_motion(cfg: CameraEffectsConfig, rng: np.random.Generator) -> FrameMotion:
    """Draw one frame's motion blur."""
    length = draw_range(rng, cfg.motion_blur)
    return FrameMotion(length=length, angle=float(rng.uniform(0.0, 180.0)) if length else 0.0)


def disk_kernel(radius: float) -> np.ndarray:
    """(k, k) float32 kernel of a lens's out-of-focus disk of ``radius`` px (edge pixels
    weighted by their coverage), summing to 1; (1, 1) below half a pixel."""
    if radius < 0.5:
        return np.ones((1, 1), np.float32)
    n = int(np.ceil(radius + 0.5))
    yy, xx = np.mgrid[-n:n + 1, -n:n + 1]
    k = np.clip(radius + 0.5 - np.hypot(xx, yy), 0.0, 1.0)
    return (k / k.sum()).astype(np.float32)


def motion_kernel(length: float, angle: float) -> np.ndarray:
    """(k, k) float32 kernel of a straight motion of ``length`` px at ``angle`` degrees (0 =
    along +u, 90 = along +v), the line's samples splatted bilinearly, summing to 1; (1, 1)
    below half a pixel."""
    if length < 0.5:
        return np.ones((1, 1), np.float32)
    n = int(np.ceil(length / 2)) + 1
    t = np.linspace(-length / 2, length / 2, max(2, int(np.ceil(length * 4)) + 1))
    a = np.deg2rad(angle)
    u, v = t * np.cos(a) + n, t * np.sin(a) + n
    k = np.zeros((2 * n + 1, 2 * n + 1), np.float64)
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = u - u0, v - v0
    for du, dv, w in ((0, 0, (1 - fu) * (1 - fv)), (1, 0, fu * (1 - fv)),
                      (0, 1, (1 - fu) * fv), (1, 1, fu * fv)):
        np.add.at(k, (v0 + dv, u0 + du), w)
    return (k / k.sum()).astype(np.float32)


def _convolve(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    from scipy.ndimage import convolve

    if kernel.shape == (1, 1):
        return img
    return convolve(img, kernel[..., None], mode="nearest")


def motion_blur(img: np.ndarray, length: float, angle: float) -> np.ndarray:
    """(H, W, 3) float image blurred along a line of ``length`` px at ``angle`` degrees."""
    return _convolve(img, motion_kernel(length, angle))


def defocus_blur(img: np.ndarray, radius: float) -> np.ndarray:
    """(H, W, 3) float image blurred by a disk of ``radius`` px."""
    return _convolve(img, disk_kernel(radius))


def vignetting_gain(height: int, width: int, strength: float) -> np.ndarray:
    """(H, W, 1) float32 gain: 1 at the image centre falling with r^2 to ``1 - strength`` at
    the corners."""
    v = (np.arange(height, dtype=np.float32) - (height - 1) / 2) / ((height - 1) / 2 or 1)
    u = (np.arange(width, dtype=np.float32) - (width - 1) / 2) / ((width - 1) / 2 or 1)
    r2 = (u[None, :] ** 2 + v[:, None] ** 2) / 2  # 1 at the corners
    return (1.0 - strength * r2)[..., None]


def sensor_noise(img: np.ndarray, noise: float, shot_noise: float,
                 rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) linear image plus zero-mean Gaussian noise of variance
    ``noise**2 + shot_noise * img`` per pixel and channel."""
    if noise == 0 and shot_noise == 0:
        return img
    sigma = np.sqrt(noise ** 2 + shot_noise * np.clip(img, 0.0, None))
    return img + sigma * rng.standard_normal(img.shape, dtype=np.float32)


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """(H, W, 3) uint8 image compressed as JPEG at ``quality`` (1..100) and decoded."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def apply_camera(rgb: np.ndarray, camera: CameraModel, motion: FrameMotion,
                 rng: np.random.Generator) -> np.ndarray:
    """The (H, W, 3) uint8 sRGB render ``rgb`` as ``camera`` takes it with ``motion`` during
    the exposure; ``rng`` draws this frame's noise. Returns (H, W, 3) uint8."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"apply_camera: expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    x = (rgb.astype(np.float32) / 255.0) ** GAMMA
    x = motion_blur(x, motion.length, motion.angle)  # the world, during the exposure
    x = defocus_blur(x, camera.defocus)  # the lens
    if camera.vignetting:
        x = x * vignetting_gain(*x.shape[:2], camera.vignetting)
    x = x * np.float32(2.0 ** camera.exposure)  # the sensor: light gathered ...
    x = sensor_noise(x, camera.noise, camera.shot_noise, rng)  # ... and its noise
    # processing: white balance gains amplify the raw noise with the signal
    x = x * np.asarray(camera.white_balance, dtype=np.float32)
    out = (np.clip(x, 0.0, 1.0) ** (1.0 / GAMMA) * 255.0 + 0.5).astype(np.uint8)
    if camera.jpeg_quality is not None:
        out = jpeg_roundtrip(out, camera.jpeg_quality)
    return out

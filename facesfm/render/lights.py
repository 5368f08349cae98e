"""Light on the rendered head, fixed in the world frame (the head turns under it).

:class:`Lighting` is the base light every sequence has: ambient, a key and a fill light, one
colour temperature (LightingConfig). :class:`LightRig` is the appearance randomisation's
richer light (LightRigConfig): extra coloured directional lights, an ambient gain and a
specular sheen. The base and the extra lights are Lambertian, computed per vertex in linear
light; the extra lights add Lambertian irradiance per vertex (view-independent, like the base
lighting). The sheen is Blinn-Phong, ``specular * max(n.h, 0)**shininess`` per light with
``h`` the half vector between the light and the direction to the camera, so it depends on the
camera and is recomputed per frame by the renderer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facesfm.render.config import LightingConfig, LightRigConfig, draw_range

__all__ = [
    "LightRig",
    "Lighting",
    "rig_sheen",
    "sample_light_rig",
    "sample_lighting",
    "shade_vertices",
    "temperature_rgb",
]

# Approximate linear-RGB tint of a black body, normalised to a maximum of 1 (kelvin -> rgb);
# interpolated linearly in between. Only a plausible range of light colours is needed.
_TEMPERATURE_TABLE = np.array(
    [
        [1000.0, 1.000, 0.220, 0.000],
        [2000.0, 1.000, 0.537, 0.051],
        [3000.0, 1.000, 0.706, 0.420],
        [4000.0, 1.000, 0.820, 0.639],
        [5000.0, 1.000, 0.894, 0.808],
        [6000.0, 1.000, 0.953, 0.937],
        [6500.0, 1.000, 0.976, 0.996],
        [7000.0, 0.961, 0.953, 1.000],
        [8000.0, 0.890, 0.902, 1.000],
        [10000.0, 0.792, 0.855, 1.000],
        [15000.0, 0.700, 0.780, 1.000],
        [40000.0, 0.620, 0.720, 1.000],
    ]
)


def temperature_rgb(kelvin: float) -> np.ndarray:
    """(3,) float64 light colour of a colour temperature, max channel 1."""
    t = _TEMPERATURE_TABLE
    return np.array([np.interp(kelvin, t[:, 0], t[:, k]) for k in (1, 2, 3)])


def _direction(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Unit vector pointing from the head towards a light (world frame)."""
    a, e = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    return np.array([np.sin(a) * np.cos(e), np.sin(e), np.cos(a) * np.cos(e)])


@dataclass(frozen=True)
class Lighting:
    """Concrete lighting of one sequence (world frame).

    ambient: float; key, fill: float intensities; key_dir, fill_dir: (3,) unit vectors from
    the head towards each light; color: (3,) linear RGB tint of all lights.
    """

    ambient: float
    key: float
    key_dir: np.ndarray
    fill: float
    fill_dir: np.ndarray
    color: np.ndarray
    temperature: float

    def to_dict(self) -> dict:
        return {
            "ambient": self.ambient,
            "key": self.key,
            "key_dir": self.key_dir.tolist(),
            "fill": self.fill,
            "fill_dir": self.fill_dir.tolist(),
            "color": self.color.tolist(),
            "temperature": self.temperature,
        }


def sample_lighting(cfg: LightingConfig, rng: np.random.Generator) -> Lighting:
    """Draw one lighting from the configured ranges."""
    ambient = draw_range(rng, cfg.ambient)
    key = draw_range(rng, cfg.key)
    az = draw_range(rng, cfg.key_azimuth)
    el = draw_range(rng, cfg.key_elevation)
    fill = draw_range(rng, cfg.fill)
    temp = draw_range(rng, cfg.temperature)
    return Lighting(
        ambient=ambient,
        key=key,
        key_dir=_direction(az, el),
        fill=fill,
        fill_dir=_direction(-az, 0.0),
        color=temperature_rgb(temp),
        temperature=temp,
    )


def shade_vertices(normals: np.ndarray, lighting: Lighting,
                   rig: LightRig | None = None) -> np.ndarray:
    """Lambertian irradiance per vertex in linear light, (V, 3) float64: the base
    ``lighting`` and, where given, the ``rig``'s extra lights and ambient gain.

    normals: (V, 3) unit outward normals (world frame).
    """
    key = np.clip(normals @ lighting.key_dir, 0.0, None)
    fill = np.clip(normals @ lighting.fill_dir, 0.0, None)
    ambient = lighting.ambient * (1.0 if rig is None else rig.ambient_gain)
    irr = (ambient + lighting.key * key + lighting.fill * fill)[:, None] * lighting.color[None, :]
    if rig is not None and len(rig.directions):
        irr = irr + np.clip(normals @ rig.directions.T, 0.0, None) @ rig.colors
    return irr


@dataclass(frozen=True)
class LightRig:
    """One sequence's extra light, as drawn (see LightRigConfig for the units).

    directions: (n, 3) unit vectors from the head towards each extra light (world frame);
    colors: (n, 3) each light's linear RGB times its intensity; temperatures: (n,) kelvin;
    ambient_gain: factor on the base ambient; specular, shininess: the sheen.
    """

    directions: np.ndarray
    colors: np.ndarray
    temperatures: np.ndarray
    ambient_gain: float
    specular: float
    shininess: float

    def to_dict(self) -> dict:
        return {"directions": self.directions.tolist(), "colors": self.colors.tolist(),
                "temperatures": self.temperatures.tolist(), "ambient_gain": self.ambient_gain,
                "specular": self.specular, "shininess": self.shininess}


def sample_light_rig(cfg: LightRigConfig, rng: np.random.Generator) -> LightRig | None:
    """Draw one sequence's light: None (the base lighting only) with probability
    ``1 - cfg.probability``."""
    if not rng.random() < cfg.probability:
        return None
    n = int(rng.integers(cfg.lights[0], cfg.lights[1] + 1))
    dirs, cols, temps = [], [], []
    for _ in range(n):
        dirs.append(_direction(draw_range(rng, cfg.azimuth), draw_range(rng, cfg.elevation)))
        temps.append(draw_range(rng, cfg.temperature))
        cols.append(temperature_rgb(temps[-1]) * draw_range(rng, cfg.intensity))
    return LightRig(
        directions=np.reshape(dirs, (n, 3)),
        colors=np.reshape(cols, (n, 3)),
        temperatures=np.asarray(temps, dtype=np.float64),
        ambient_gain=draw_range(rng, cfg.ambient),
        specular=draw_range(rng, cfg.specular),
        shininess=draw_range(rng, cfg.shininess),
    )


def rig_sheen(vertices: np.ndarray, normals: np.ndarray, lighting: Lighting, rig: LightRig,
              centre: np.ndarray) -> np.ndarray:
    """(V, 3) Blinn-Phong sheen in linear light of every light (the base key and fill and
    the rig's) seen from the camera centre ``centre`` (3,), world frame. Zero where the
    surface faces away from the light or the camera."""
    view = np.asarray(centre, dtype=np.float64)[None, :] - vertices
    view /= np.linalg.norm(view, axis=1, keepdims=True) + 1e-12
    dirs = np.concatenate([[lighting.key_dir, lighting.fill_dir], rig.directions])
    cols = np.concatenate([[lighting.key * lighting.color, lighting.fill * lighting.color],
                           rig.colors])
    facing = np.einsum("ij,ij->i", normals, view) > 0
    out = np.zeros_like(vertices, dtype=np.float64)
    for d, c in zip(dirs, cols):
        h = view + d[None, :]
        h /= np.linalg.norm(h, axis=1, keepdims=True) + 1e-12
        nh = np.clip(np.einsum("ij,ij->i", normals, h), 0.0, None)
        lit = facing & (normals @ d > 0)
        out += np.where(lit, rig.specular * nh ** rig.shininess, 0.0)[:, None] * c[None, :]
    return out

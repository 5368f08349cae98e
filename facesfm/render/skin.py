"""The face's albedo changed beyond its source's own range of skin: tone, saturation, contrast,
fine detail and tint, as one sequence's :class:`SkinVariation` drew them (SkinVariationConfig).

It changes the texture image of a textured mesh (the face sources' synthetic skin and a user
mesh's photograph alike) or the vertex colours of a coloured one; the geometry is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
from scipy.ndimage import gaussian_filter

from facesfm.faces.types import FaceMesh
from facesfm.render.appearance_config import SkinVariationConfig, draw_range

__all__ = ["SkinVariation", "sample_skin_variation", "vary_albedo", "vary_skin"]

_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class SkinVariation:
    """One sequence's change of the albedo, as drawn (see SkinVariationConfig).

    tint: (3,) RGB gains; detail_sigma: the blur (texels, or smoothing passes on vertex
    colours) that separates the fine detail.
    """

    tone: float
    saturation: float
    contrast: float
    detail: float
    detail_sigma: float
    tint: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {"tone": self.tone, "saturation": self.saturation, "contrast": self.contrast,
                "detail": self.detail, "detail_sigma": self.detail_sigma,
                "tint": list(self.tint)}


def sample_skin_variation(cfg: SkinVariationConfig,
                          rng: np.random.Generator) -> SkinVariation | None:
    """Draw one sequence's skin change: None (the albedo as the face source made it) with
    probability ``1 - cfg.probability``."""
    if not rng.random() < cfg.probability:
        return None
    return SkinVariation(
        tone=draw_range(rng, cfg.tone),
        saturation=draw_range(rng, cfg.saturation),
        contrast=draw_range(rng, cfg.contrast),
        detail=draw_range(rng, cfg.detail),
        detail_sigma=float(cfg.detail_sigma),
        tint=tuple(float(np.exp(u)) for u in rng.uniform(-cfg.tint, cfg.tint, 3)),
    )


def vary_albedo(rgb: np.ndarray, smooth: np.ndarray, var: SkinVariation) -> np.ndarray:
    """The albedo ``rgb`` (..., 3) float sRGB in [0, 1] changed by ``var``; ``smooth`` is its
    blur (the same shape), so ``rgb - smooth`` is the fine detail. Returns floats in [0, 1]."""
    out = smooth + var.detail * (rgb - smooth)
    mean = out.reshape(-1, 3).mean(axis=0)
    out = mean + var.contrast * (out - mean)
    grey = (out @ _LUMA)[..., None]
    out = grey + var.saturation * (out - grey)
    out = out * var.tone * np.asarray(var.tint)
    return np.clip(out, 0.0, 1.0)


def _smooth_vertex_colors(colors: np.ndarray, faces: np.ndarray, passes: int) -> np.ndarray:
    """``passes`` rounds of averaging each vertex colour with its mesh neighbours'."""
    V = len(colors)
    i = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 1], faces[:, 2],
                        faces[:, 0]])
    j = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0], faces[:, 0], faces[:, 1],
                        faces[:, 2]])
    A = sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(V, V))
    A = A + sp.identity(V, format="csr")
    A.data[:] = 1.0  # repeated edges count once
    A = sp.diags(1.0 / np.asarray(A.sum(axis=1)).ravel()) @ A
    out = colors
    for _ in range(passes):
        out = A @ out
    return out


def vary_skin(face: FaceMesh, var: SkinVariation) -> FaceMesh:
    """``face`` with its texture and its vertex colours (each where it has one) changed by
    ``var``; the same mesh when it has neither (a plain grey albedo has no skin to change)."""
    out = face
    if face.texture is not None:
        tex = np.asarray(face.texture[..., :3], dtype=np.float64) / 255.0
        smooth = gaussian_filter(tex, sigma=(var.detail_sigma, var.detail_sigma, 0),
                                 mode="nearest")
        out = replace(out, texture=(vary_albedo(tex, smooth, var) * 255.0 + 0.5)
                      .astype(np.uint8))
    if face.vertex_colors is not None:
        col = np.asarray(face.vertex_colors, dtype=np.float64)
        smooth = _smooth_vertex_colors(col, np.asarray(face.faces),
                                       max(1, round(var.detail_sigma)))
        out = replace(out, vertex_colors=vary_albedo(col, smooth, var).astype(np.float32))
    return out

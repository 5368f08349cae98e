"""facesfm: 3D face reconstruction from multi-view images by deep Structure-from-Motion with a
differentiable bundle adjustment."""

__version__ = "0.1.0"

__all__ = ["__version__"]

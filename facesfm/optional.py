"""Optional packages: import them on use, with an install hint when they are missing."""

from __future__ import annotations

__all__ = ["OPEN3D_HINT", "have_open3d", "require_open3d"]

OPEN3D_HINT = (
    "open3d is not installed; install it with: pip install 'facesfm[open3d]' (open3d==0.20.*)"
)


def have_open3d() -> bool:
    """Whether open3d can be imported."""
    try:
        import open3d  # noqa: F401
    except ImportError:
        return False
    return True


def require_open3d():
    """The ``open3d`` module, or an ImportError carrying the install hint."""
    try:
        import open3d
    except ImportError as e:  # pragma: no cover - exercised only without open3d
        raise ImportError(OPEN3D_HINT) from e
    return open3d

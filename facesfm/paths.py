"""Where facesfm finds data it does not ship: the ICT-FaceKit model and its cache."""

from __future__ import annotations

import os
from pathlib import Path

from facesfm.errors import InputError

ICT_ENV = "FACESFM_ICT_DIR"
CACHE_ENV = "FACESFM_CACHE"
REPO_ROOT = Path(__file__).resolve().parent.parent


def default_ict_candidates() -> list[Path]:
    """Places searched for ICT-FaceKit when the user names none, in order."""
    out = []
    if os.environ.get(ICT_ENV):
        out.append(Path(os.environ[ICT_ENV]))
    out.append(REPO_ROOT.parent / "shared" / "ict-facekit")
    return out


def find_ict_dir(path: str | os.PathLike | None = None) -> Path:
    """The ``FaceXModel`` folder of an ICT-FaceKit copy.

    ``path`` may name the ``FaceXModel`` folder itself or its parent. Without ``path``, the
    ``FACESFM_ICT_DIR`` environment variable, then ``../shared/ict-facekit`` beside the
    repository are tried. Raises :class:`InputError` naming what was looked at.
    """
    candidates = [Path(path)] if path is not None else default_ict_candidates()
    for c in candidates:
        for d in (c, c / "FaceXModel"):
            if (d / "generic_neutral_mesh.obj").is_file():
                return d
    tried = ", ".join(str(c) for c in candidates)
    raise InputError(
        f"ICT-FaceKit not found (no FaceXModel/generic_neutral_mesh.obj in: {tried}); "
        f"pass --ict-dir or set {ICT_ENV}"
    )


def cache_dir() -> Path:
    """Writable cache folder (parsed models); ``FACESFM_CACHE`` or ~/.cache/facesfm."""
    d = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "facesfm"))
    d.mkdir(parents=True, exist_ok=True)
    return d

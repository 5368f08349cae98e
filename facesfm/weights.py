"""The network weights shipped inside the package, and their model card.

``facesfm/assets/weights/`` holds inference-only checkpoints (see
:func:`facesfm.training.checkpoint.export_weights`) and ``card.json``, the model card: how
each network was trained (data, seeds, config, commit) and what it measured on held-out faces
rendered with seeds never used in training. ``MODEL_CARD.md`` is the same card for people.
``tests/test_shipped_weights.py`` re-renders the card's test protocol and fails when a shipped
network measures more than 10% worse than its card says.

Shipped today: the landmark detectors, one per face source (their landmark IDs are vertices
of that source's model, so a detector only fits faces of its own model):

* ``builtin``: trained on renders of the built-in head (no data files needed; the demo);
* ``ict``: trained on renders of ICT-FaceKit faces (the paper's setting).

and the stage-2 depth and pose networks (``sfm_ict.pt``), trained without 3D supervision on
renders of ICT-FaceKit faces with the BA layer on; used by ``facesfm solve --checkpoint``
(:func:`shipped_sfm_checkpoint`).
"""

from __future__ import annotations

import json
from pathlib import Path

from facesfm.errors import InputError

__all__ = [
    "CARD_PATH",
    "WEIGHTS_DIR",
    "model_card",
    "resolve_weights",
    "shipped_landmark_checkpoint",
    "shipped_sfm_checkpoint",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "assets" / "weights"
CARD_PATH = WEIGHTS_DIR / "card.json"
FACE_SOURCES = ("builtin", "ict")


def model_card() -> dict:
    """The model card (``card.json``) as a dict; InputError when it is missing."""
    if not CARD_PATH.is_file():
        raise InputError(f"no model card at {CARD_PATH}: this install ships no weights")
    return json.loads(CARD_PATH.read_text())


def shipped_landmark_checkpoint(face: str = "builtin") -> Path:
    """Path of the shipped landmark detector for faces of ``face`` ("builtin" or "ict")."""
    if face not in FACE_SOURCES:
        raise InputError(f"no shipped detector for faces {face!r}; choose one of {FACE_SOURCES}")
    path = WEIGHTS_DIR / model_card()["landmarks"][face]["file"]
    if not path.is_file():
        raise InputError(f"shipped weights missing: {path} (a broken install?)")
    return path


def shipped_sfm_checkpoint(face: str = "ict") -> Path:
    """Path of the shipped depth and pose networks trained on faces of ``face`` (only "ict");
    InputError when this install ships none."""
    entries = model_card().get("sfm", {})
    if face not in entries:
        raise InputError(f"no shipped depth/pose networks for faces {face!r} "
                         f"(shipped: {sorted(entries) or 'none'})")
    path = WEIGHTS_DIR / entries[face]["file"]
    if not path.is_file():
        raise InputError(f"shipped weights missing: {path} (a broken install?)")
    return path


def resolve_weights(value: str | Path | None, stage: str) -> str | None:
    """A checkpoint option as given on the command line: a path, or the name of shipped
    weights ("ict" or "builtin" for a landmark detector, "ict" for the depth/pose networks of
    ``stage`` "sfm"). A path that exists wins over a name; anything else is returned as given
    (so the loader's missing-file error names it)."""
    if value is None:
        return None
    if Path(value).is_file():
        return str(value)
    name = str(value)
    if stage == "landmarks" and name in FACE_SOURCES:
        return str(shipped_landmark_checkpoint(name))
    if stage == "sfm" and name in model_card().get("sfm", {}):
        return str(shipped_sfm_checkpoint(name))
    return str(value)

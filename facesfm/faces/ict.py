"""ICT-FaceKit morphable face model (USC ICT, MIT licence), read from its ``FaceXModel`` folder.

A face is ``neutral + sum_k w_id[k] * identity_mode[k] + sum_j w_ex[j] * expression_mode[j]``,
each mode being ``file_vertices - neutral_vertices`` of one OBJ file of the folder. Only the
``v`` lines of the identity/expression files are read, so the trimmed copy in
``../shared/ict-facekit`` (``v`` lines only) and the upstream files (which repeat the neutral
mesh's ``vt``/``f`` lines) load the same; the topology and texture coordinates come from
``generic_neutral_mesh.obj``.

Frames and units: ICT-FaceKit is in centimetres with +y up and the face looking down +z.
facesfm's world frame is millimetres, so ``X_world = 10 * X_ict - ICT_ORIGIN_MM``: one fixed
translation for every identity and expression (the bounding-box centre of the neutral
face + head/neck, rounded to the millimetre), which puts the head centre near the origin.

Cache: parsing the ~150 OBJ files takes seconds, so the parsed arrays are saved once as an
uncompressed ``.npz`` in :func:`facesfm.paths.cache_dir`, named by a content key: a SHA-256 of
the loader version, every model file's name, size and mtime, plus the bytes of the neutral
mesh and of ``vertex_indices.json``. Editing or replacing any file changes the key, so a stale
cache is never read; a copied folder (new mtimes) is simply parsed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesfm.errors import InputError
from facesfm.faces.landmarks import dense_landmarks, hole_margin_mask
from facesfm.faces.types import FaceMesh
from facesfm.geometry.mesh import vertex_normals
from facesfm.io import atomic_path
from facesfm.paths import cache_dir, find_ict_dir

__all__ = [
    "ICT_NARROW_FACE",
    "ICT_ORIGIN_MM",
    "ICT_PARTS",
    "ICTArrays",
    "ICTFaceModel",
    "atlas_uv",
    "load_ict_arrays",
    "read_obj_topology",
    "read_obj_vertices",
]

#: Vertex id ranges [start, stop) of the parts a rendered face is made of (README of ICT).
#: The interior parts (mouth socket, gums, teeth, eye occlusion, lashes) are never used:
#: they hide behind closed lips and would only add occluders to depth maps.
ICT_PARTS = {
    "face": (0, 9409),
    "head": (9409, 11248),
    "eyeballs": (21451, 24591),
}
#: The narrow face area [start, stop): where landmarks live, the ``face_region`` of a mesh.
ICT_NARROW_FACE = (0, 6706)
#: World origin in ICT coordinates scaled to mm: bbox centre of the neutral face + head/neck
#: (0, -24.02, 19.28) mm, rounded. Fixed, so every identity shares one world frame.
ICT_ORIGIN_MM = np.array([0.0, -24.0, 19.0])
CM_TO_MM = 10.0
#: Bumped whenever the parse or the stored landmark ordering changes (invalidates caches).
LOADER_VERSION = 2

_NEUTRAL = "generic_neutral_mesh.obj"
_INDICES = "vertex_indices.json"
_SKIN_RGB = (0.78, 0.60, 0.50)
_EYE_RGB = (0.92, 0.91, 0.88)


# --------------------------------------------------------------------------------------------
# OBJ parsing
# --------------------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from e


def read_obj_vertices(path: str | os.PathLike) -> np.ndarray:
    """(N, 3) float64 positions of the ``v`` lines of an OBJ file, in file order.

    Other lines (``vt``, ``vn``, ``f``, comments) are skipped. Extra values after x y z (a
    ``w`` or vertex colours) are ignored. A malformed ``v`` line raises :class:`InputError`
    naming the file and the 1-based line number.
    """
    path = Path(path)
    lines = _read_bytes(path).splitlines()
    vl = [ln[2:] for ln in lines if ln[:2] == b"v "]
    # Fast path: one numpy parse of the joined coordinates, trusted only if it yields exactly
    # three finite numbers per line; anything else is re-read line by line to name the culprit.
    if vl:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                flat = np.fromstring(b"\n".join(vl), sep=" ")
            except (ValueError, DeprecationWarning):
                flat = None
        if flat is not None and flat.size == 3 * len(vl) and np.isfinite(flat).all():
            return flat.reshape(-1, 3)
    out = []
    for i, ln in enumerate(lines, start=1):
        if ln[:2] != b"v ":
            continue
        tok = ln.split()[1:]
        try:
            if len(tok) not in (3, 4, 6, 7):
                raise ValueError
            xyz = [float(t) for t in tok[:3]]
            if not all(np.isfinite(xyz)):
                raise ValueError
        except ValueError:
            text = ln.decode("utf-8", "replace").strip()
            raise InputError(f"{path}: malformed vertex on line {i}: {text[:80]!r}") from None
        out.append(xyz)
    return np.asarray(out, dtype=np.float64).reshape(-1, 3)


def read_obj_topology(
    path: str | os.PathLike, n_vertices: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Triangles and per-corner texture coordinates of an OBJ file's ``f`` lines.

    Polygons are split into a fan of triangles (a quad ``a b c d`` gives ``a b c`` and
    ``a c d``), keeping the file's winding. Face tokens may be ``v``, ``v/vt``, ``v/vt/vn`` or
    ``v//vn``, 1-based or negative (relative).

    Returns faces (T, 3) int64 (0-based) and face_uv (T, 3, 2) float32 (OBJ ``vt``, v up), or
    None for face_uv if any face lacks texture indices. Malformed lines raise
    :class:`InputError` naming the file and line.
    """
    path = Path(path)
    lines = _read_bytes(path).splitlines()
    vts: list[list[float]] = []
    tri_v: list[tuple[int, int, int]] = []
    tri_t: list[tuple[int, int, int]] = []
    has_uv = True
    for i, ln in enumerate(lines, start=1):
        head = ln[:3]
        if head == b"vt ":
            tok = ln.split()[1:]
            try:
                if len(tok) not in (2, 3):
                    raise ValueError
                vts.append([float(tok[0]), float(tok[1])])
            except ValueError:
                raise InputError(
                    f"{path}: malformed texture coordinate on line {i}: {ln[:80]!r}"
                ) from None
        elif head[:2] == b"f ":
            tok = ln.split()[1:]
            try:
                if len(tok) < 3:
                    raise ValueError
                vi, ti = [], []
                for t in tok:
                    p = t.split(b"/")
                    a = int(p[0])
                    vi.append(a - 1 if a > 0 else n_vertices + a)
                    if len(p) > 1 and p[1]:
                        b = int(p[1])
                        ti.append(b - 1 if b > 0 else len(vts) + b)
                    else:
                        ti.append(-1)
                if min(vi) < 0 or max(vi) >= n_vertices:
                    raise IndexError
            except (ValueError, IndexError):
                raise InputError(
                    f"{path}: malformed face on line {i} ({n_vertices} vertices): {ln[:80]!r}"
                ) from None
            if min(ti) < 0:
                has_uv = False
            for k in range(1, len(vi) - 1):
                tri_v.append((vi[0], vi[k], vi[k + 1]))
                tri_t.append((ti[0], ti[k], ti[k + 1]))
    faces = np.asarray(tri_v, dtype=np.int64).reshape(-1, 3)
    if not has_uv or not vts or not tri_t:
        return faces, None
    t = np.asarray(tri_t, dtype=np.int64)
    if t.max() >= len(vts):
        raise InputError(f"{path}: a face names texture coordinate {t.max() + 1} of {len(vts)}")
    return faces, np.asarray(vts, dtype=np.float32)[t]


# --------------------------------------------------------------------------------------------
# The parsed model and its cache
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ICTArrays:
    """The whole parsed model in ICT's own indexing and units (cm), all parts included.

    neutral:          (V, 3) float64 cm, V = 26719.
    identity_modes:   (K, V, 3) float64 cm, identity file minus neutral (K = 100).
    expression_modes: (J, V, 3) float64 cm (J = 53).
    identity_names / expression_names: file stems, in mode order.
    faces:            (T, 3) int64 triangles of the neutral mesh.
    face_uv:          (T, 3, 2) float32 texture coordinates per triangle corner.
    landmarks68:      (68,) int64 ``idx_to_landmark_verts`` of vertex_indices.json.
    dense:            (800,) int64 nested landmark ordering (first 68 = landmarks68).
    """

    neutral: np.ndarray
    identity_modes: np.ndarray
    expression_modes: np.ndarray
    identity_names: tuple[str, ...]
    expression_names: tuple[str, ...]
    faces: np.ndarray
    face_uv: np.ndarray
    landmarks68: np.ndarray
    dense: np.ndarray


def _model_files(folder: Path) -> tuple[list[str], list[str], dict]:
    idx_path = folder / _INDICES
    if not idx_path.is_file():
        raise InputError(f"ICT-FaceKit folder {folder} has no {_INDICES}")
    try:
        indices = json.loads(_read_bytes(idx_path))
    except json.JSONDecodeError as e:
        raise InputError(f"{idx_path}: not valid JSON ({e})") from e
    identities = sorted(p.stem for p in folder.glob("identity[0-9][0-9][0-9].obj"))
    if not identities:
        raise InputError(f"ICT-FaceKit folder {folder} has no identityNNN.obj files")
    expressions = indices.get("expressions")
    if not isinstance(expressions, list) or not all(isinstance(e, str) for e in expressions):
        raise InputError(f"{idx_path}: 'expressions' must be a list of names")
    for name in expressions:
        if not (folder / f"{name}.obj").is_file():
            raise InputError(f"{folder / (name + '.obj')}: missing (listed in {idx_path})")
    lm = indices.get("idx_to_landmark_verts")
    if not isinstance(lm, list) or len(lm) != 68:
        raise InputError(f"{idx_path}: 'idx_to_landmark_verts' must list 68 vertex ids")
    return identities, list(expressions), indices


def _cache_key(folder: Path, stems: list[str]) -> str:
    h = hashlib.sha256(f"facesfm-ict-v{LOADER_VERSION}".encode())
    for name in sorted([f"{s}.obj" for s in stems] + [_NEUTRAL, _INDICES]):
        st = (folder / name).stat()
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    for name in (_NEUTRAL, _INDICES):
        h.update(hashlib.sha256(_read_bytes(folder / name)).digest())
    return h.hexdigest()[:24]


#: Candidates whose neutral normal has z below this face into the head (nostril interiors,
#: mouth corners): no camera in front of the face sees them.
_INWARD_NZ = -0.3


def _landmark_region(neutral: np.ndarray, faces: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """(V,) bool: the narrow face area minus the rolled-in rims of the eye and mouth holes
    and minus inward-facing vertices (nostrils)."""
    nv = len(neutral)
    narrow = np.zeros(nv, bool)
    narrow[ICT_NARROW_FACE[0] : ICT_NARROW_FACE[1]] = True
    lo, hi = ICT_PARTS["face"]
    face_tris = faces[((faces >= lo) & (faces < hi)).all(1)]
    narrow &= vertex_normals(neutral, face_tris)[:, 2] >= _INWARD_NZ
    return hole_margin_mask(face_tris, nv, narrow, seeds)


def _parse(folder: Path, identities, expressions, indices) -> ICTArrays:
    neutral_path = folder / _NEUTRAL
    neutral = read_obj_vertices(neutral_path)
    nv = len(neutral)
    faces, face_uv = read_obj_topology(neutral_path, nv)
    if face_uv is None:
        raise InputError(f"{neutral_path}: faces without texture coordinates (vt)")

    def modes(stems):
        out = np.empty((len(stems), nv, 3), np.float64)
        for k, s in enumerate(stems):
            p = folder / f"{s}.obj"
            v = read_obj_vertices(p)
            if len(v) != nv:
                raise InputError(
                    f"{p}: {len(v)} vertices, but {neutral_path.name} has {nv}; "
                    "every mode file must list the neutral mesh's vertices in order"
                )
            np.subtract(v, neutral, out=out[k])
        return out

    id_modes = modes(identities)
    ex_modes = modes(expressions)
    lm68 = np.asarray(indices["idx_to_landmark_verts"], np.int64)
    if lm68.min() < 0 or lm68.max() >= ICT_NARROW_FACE[1]:
        raise InputError(f"{folder / _INDICES}: landmark ids outside the face area")
    region = _landmark_region(neutral, faces, lm68)
    dense = dense_landmarks(neutral, region, lm68, n=800)
    return ICTArrays(
        neutral,
        id_modes,
        ex_modes,
        tuple(identities),
        tuple(expressions),
        faces,
        face_uv,
        lm68,
        dense,
    )


def load_ict_arrays(ict_dir=None, cache: bool | str | os.PathLike = True) -> ICTArrays:
    """Parse (or read from the cache) the whole ICT-FaceKit model.

    ict_dir: the FaceXModel folder or its parent (None: see :func:`find_ict_dir`).
    cache:   True: :func:`cache_dir`; a path: that folder; False: always parse.
    """
    folder = find_ict_dir(ict_dir)
    identities, expressions, indices = _model_files(folder)
    cpath = None
    if cache is not False:
        try:
            cdir = cache_dir() if cache is True else Path(cache)
            cdir.mkdir(parents=True, exist_ok=True)
            cpath = cdir / f"ict_{_cache_key(folder, identities + expressions)}.npz"
        except OSError:
            cpath = None  # unwritable cache: parse every time rather than fail
    if cpath is not None and cpath.is_file():
        try:
            with np.load(cpath, allow_pickle=False) as z:
                arrs = ICTArrays(
                    z["neutral"],
                    z["identity_modes"],
                    z["expression_modes"],
                    tuple(str(s) for s in z["identity_names"]),
                    tuple(str(s) for s in z["expression_names"]),
                    z["faces"],
                    z["face_uv"],
                    z["landmarks68"],
                    z["dense"],
                )
            if arrs.identity_names == tuple(identities) and arrs.expression_names == tuple(
                expressions
            ):
                return arrs
        except (OSError, ValueError, KeyError):
            pass  # a corrupt or foreign file: parse again and overwrite it
    arrs = _parse(folder, identities, expressions, indices)
    if cpath is not None:
        try:
            with atomic_path(cpath) as tmp, open(tmp, "wb") as f:
                np.savez(
                    f,
                    neutral=arrs.neutral,
                    identity_modes=arrs.identity_modes,
                    expression_modes=arrs.expression_modes,
                    identity_names=np.array(arrs.identity_names),
                    expression_names=np.array(arrs.expression_names),
                    faces=arrs.faces,
                    face_uv=arrs.face_uv,
                    landmarks68=arrs.landmarks68,
                    dense=arrs.dense,
                )
        except OSError:
            pass
    return arrs


# --------------------------------------------------------------------------------------------
# The face model
# --------------------------------------------------------------------------------------------


def atlas_uv(face_uv: np.ndarray, eyeball_tris: np.ndarray) -> np.ndarray:
    """Pack ICT's multi-tile UVs into one [0, 1]^2 texture (a 2 x 2 atlas).

    ICT lays its UVs out in UDIM-style tiles: the face in u in [0, 1], the head/neck (and the
    face's rim) in u in [1, 2], and the eyeballs again in [0, 1]^2, overlapping the face, as
    they use a texture of their own upstream. One FaceMesh carries one texture, so each tile
    gets a quadrant (v up, so v in [0.5, 1] is the top half of the image):
    face tile -> top-left, head tile -> top-right, eyeballs -> bottom-left; bottom-right unused.

    face_uv: (T, 3, 2) raw ICT coordinates; eyeball_tris: (T,) bool.
    Returns (T, 3, 2) float32 in [0, 1].
    """
    uv = np.asarray(face_uv, dtype=np.float64)
    tile = np.clip(np.floor(uv[..., 0].mean(1)), 0, 1)  # no ICT triangle straddles tiles
    u = uv[..., 0] - tile[:, None]
    out = np.empty_like(uv)
    out[..., 0] = 0.5 * u + 0.5 * tile[:, None]
    out[..., 1] = 0.5 * uv[..., 1] + 0.5
    eye = np.asarray(eyeball_tris, bool)
    out[eye, :, 0] = 0.5 * uv[eye, :, 0]
    out[eye, :, 1] = 0.5 * uv[eye, :, 1]
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _synthesize_albedo():
    """The albedo synthesiser, or None while facesfm.faces.albedo does not exist."""
    try:
        from facesfm.faces.albedo import synthesize_albedo
    except ModuleNotFoundError as e:
        if e.name != "facesfm.faces.albedo":
            raise
        return None
    return synthesize_albedo


class ICTFaceModel:
    """ICT-FaceKit as a :class:`facesfm.faces.types.FaceModel`.

    ict_dir:          FaceXModel folder or its parent (None: :func:`find_ict_dir`).
    parts:            subset of ``ICT_PARTS`` names; must include "face" (landmarks live there).
    n_identity_modes: how many identity modes ``sample`` draws (None: all, 100).
    identity_scale:   standard deviation of the sampled identity weights (upstream: 1).
    max_expressions:  ``sample(expression=True)`` activates 1..max_expressions random blend
                      shapes, each with a weight uniform in [0, 1].
    texture_size:     albedo texture side in pixels; None: plain vertex colours instead.
    cache:            as in :func:`load_ict_arrays`.

    Attributes (the compacted mesh of the chosen parts, world frame, mm; so that
    ``vertices = neutral_vertices + w_id @ identity_modes + w_ex @ expression_modes``):
    neutral_vertices (V, 3) float64, identity_modes (K, V, 3), expression_modes (J, V, 3),
    expression_names, faces (T, 3), face_uv (T, 3, 2), vertex_ids (V,) the ICT id of each
    vertex (face_uv packs ICT's UV tiles into one texture, see :func:`atlas_uv`),
    landmarks68 (68,), landmark_vertices (800,), face_region (V,) bool (the narrow face
    area), landmark_region (V,) bool (its part the dense landmarks are drawn from). The face part
    comes first and whole, so compacted ids of face vertices equal ICT ids.
    """

    name = "ict"

    def __init__(
        self,
        ict_dir=None,
        parts=("face", "head", "eyeballs"),
        n_identity_modes: int | None = None,
        identity_scale: float = 1.0,
        max_expressions: int = 4,
        texture_size: int | None = 1024,
        cache: bool | str | os.PathLike = True,
    ):
        parts = tuple(parts)
        bad = [p for p in parts if p not in ICT_PARTS]
        if bad or "face" not in parts or len(set(parts)) != len(parts):
            raise InputError(
                f"ICT parts {list(parts)}: choose distinct names among {list(ICT_PARTS)}, "
                "including 'face'"
            )
        arrs = load_ict_arrays(ict_dir, cache=cache)
        self.ict_dir = find_ict_dir(ict_dir)
        k_all = len(arrs.identity_names)
        k = k_all if n_identity_modes is None else int(n_identity_modes)
        if not 0 <= k <= k_all:
            raise InputError(f"n_identity_modes={n_identity_modes}: must lie in 0..{k_all}")
        if not identity_scale >= 0:
            raise InputError(f"identity_scale={identity_scale}: must be >= 0")
        if not max_expressions >= 0:
            raise InputError(f"max_expressions={max_expressions}: must be >= 0")
        self.parts = parts
        self.n_identity_modes = k
        self.identity_scale = float(identity_scale)
        self.max_expressions = min(int(max_expressions), len(arrs.expression_names))
        self.texture_size = texture_size

        nv_all = len(arrs.neutral)
        # Parts in ICT order, so the face (ids 0..9408) stays first and keeps its ids.
        keep = np.zeros(nv_all, bool)
        for p in sorted(parts, key=lambda p: ICT_PARTS[p][0]):
            keep[ICT_PARTS[p][0] : ICT_PARTS[p][1]] = True
        self.vertex_ids = np.flatnonzero(keep)
        remap = np.full(nv_all, -1, np.int64)
        remap[self.vertex_ids] = np.arange(len(self.vertex_ids))
        tri_keep = keep[arrs.faces].all(1)  # drop triangles touching removed parts
        self.faces = remap[arrs.faces[tri_keep]]
        lo_e, hi_e = ICT_PARTS["eyeballs"]
        kept = arrs.faces[tri_keep]
        self.face_uv = atlas_uv(arrs.face_uv[tri_keep], ((kept >= lo_e) & (kept < hi_e)).all(1))
        vid = self.vertex_ids
        self.neutral_vertices = arrs.neutral[vid] * CM_TO_MM - ICT_ORIGIN_MM
        # Fancy indexing on axis 1 gives a transposed layout; make the modes C-contiguous so
        # that the (K,) @ (K, V*3) products in mesh() need no copies.
        self.identity_modes = np.ascontiguousarray(arrs.identity_modes[:, vid]) * CM_TO_MM
        self.expression_modes = np.ascontiguousarray(arrs.expression_modes[:, vid]) * CM_TO_MM
        self.identity_names = arrs.identity_names
        self.expression_names = arrs.expression_names
        self.landmarks68 = remap[arrs.landmarks68]
        self.landmark_vertices = remap[arrs.dense]
        lo, hi = ICT_NARROW_FACE
        self.face_region = (vid >= lo) & (vid < hi)
        # Where the dense landmarks were sampled (a subset of face_region).
        self.landmark_region = _landmark_region(arrs.neutral, arrs.faces, arrs.landmarks68)[vid]
        eyes = (vid >= ICT_PARTS["eyeballs"][0]) & (vid < ICT_PARTS["eyeballs"][1])
        self._plain_colors = np.where(eyes[:, None], _EYE_RGB, _SKIN_RGB).astype(np.float32)

    def mesh(self, w_id=None, w_ex=None, albedo_seed: int = 0) -> FaceMesh:
        """The face for given coefficients.

        w_id: (k,) identity weights for the first k <= 100 modes (None: zeros).
        w_ex: (J,) expression weights, or a dict {expression name: weight} (None: zeros).
        albedo_seed: seed of the synthesised skin texture.
        """
        v = self.neutral_vertices.copy()
        if w_id is not None:
            w = np.asarray(w_id, dtype=np.float64)
            if w.ndim != 1 or len(w) > len(self.identity_modes):
                raise InputError(
                    f"identity weights must be (k,) with k <= {len(self.identity_modes)}, "
                    f"got shape {w.shape}"
                )
            k = len(w)
            v += (w @ self.identity_modes[:k].reshape(k, -1)).reshape(v.shape)
        if w_ex is not None:
            e = self._expression_vector(w_ex)
            v += (e @ self.expression_modes.reshape(len(e), -1)).reshape(v.shape)
        texture = colors = None
        synth = _synthesize_albedo() if self.texture_size else None
        if synth is not None:
            texture = synth(
                v,
                self.faces,
                self.face_uv,
                v[self.landmarks68],
                int(albedo_seed),
                size=int(self.texture_size),
            )
        else:
            colors = self._plain_colors.copy()
        return FaceMesh(
            vertices=v,
            faces=self.faces,
            landmark_vertices=self.landmark_vertices,
            vertex_colors=colors,
            texture=texture,
            face_uv=self.face_uv,
            face_region=self.face_region,
            name=f"ict[{'+'.join(self.parts)}]",
            meta={
                "model": "ict-facekit",
                "ict_dir": str(self.ict_dir),
                "parts": list(self.parts),
                "units": "mm",
                "origin_offset_mm": ICT_ORIGIN_MM.tolist(),
                "semantic68": True,
            },
        )

    def _expression_vector(self, w_ex) -> np.ndarray:
        j = len(self.expression_names)
        if isinstance(w_ex, dict):
            e = np.zeros(j)
            for name, w in w_ex.items():
                if name not in self.expression_names:
                    raise InputError(
                        f"unknown ICT expression {name!r}; choose among {list(self.expression_names)}"
                    )
                e[self.expression_names.index(name)] = float(w)
            return e
        e = np.asarray(w_ex, dtype=np.float64)
        if e.shape != (j,):
            raise InputError(f"expression weights must be ({j},), got shape {e.shape}")
        return e

    def sample_coefficients(self, seed: int, expression: bool = False) -> dict:
        """Random coefficients for ``seed`` (np.random.default_rng): identity weights
        N(0, identity_scale^2) over the first n_identity_modes modes, then an albedo seed, then
        (only if ``expression``) 1..max_expressions blend shapes with weights U[0, 1]."""
        rng = np.random.default_rng(int(seed))
        w_id = rng.standard_normal(self.n_identity_modes) * self.identity_scale
        albedo_seed = int(rng.integers(0, 2**31 - 1))
        w_ex = {}
        if expression and self.max_expressions > 0:
            n = int(rng.integers(1, self.max_expressions + 1))
            idx = np.sort(rng.choice(len(self.expression_names), size=n, replace=False))
            for i, w in zip(idx, rng.uniform(0.0, 1.0, size=n)):
                w_ex[self.expression_names[int(i)]] = float(w)
        return {
            "model": "ict-facekit",
            "seed": int(seed),
            "parts": list(self.parts),
            "identity": [float(x) for x in w_id],
            "expression": w_ex,
            "albedo_seed": albedo_seed,
        }

    def sample(self, seed: int, expression: bool = False) -> tuple[FaceMesh, dict]:
        """A random face for ``seed`` and its JSON-serialisable coefficients."""
        c = self.sample_coefficients(seed, expression)
        mesh = self.mesh(c["identity"], c["expression"] or None, albedo_seed=c["albedo_seed"])
        return mesh, c

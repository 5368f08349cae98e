"""Landmark vertex-ID sets: the 68 semantic ones plus dense, nested farthest-point samples.

A landmark is a mesh vertex with a fixed ID (paper section 3.1: "each 3D vertex is labeled
with a unique ID"). The dense set of N landmarks is the first N entries of one ordering, so
landmark ID k is the same vertex whatever N a run uses, and for every identity of a model
(the IDs are chosen once, on the neutral shape, and stored with the model).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from facesfm.errors import InputError
from facesfm.faces.types import LANDMARK_COUNTS

__all__ = [
    "boundary_loops",
    "dense_landmarks",
    "hole_margin_mask",
    "ring_distance",
    "validate_count",
]


def validate_count(n) -> int:
    """``n`` as an int if it is one of :data:`LANDMARK_COUNTS`, else :class:`InputError`."""
    try:
        ok = int(n) == n and int(n) in LANDMARK_COUNTS
    except (TypeError, ValueError):
        ok = False
    if not ok:
        choices = ", ".join(str(c) for c in LANDMARK_COUNTS)
        raise InputError(f"unknown landmark count {n}; choose one of {choices}")
    return int(n)


def dense_landmarks(
    vertices: np.ndarray,
    region_mask: np.ndarray | None,
    seeds68: np.ndarray | list,
    n: int = 800,
) -> np.ndarray:
    """Deterministic farthest-point sampling of ``n`` landmark vertices.

    vertices:    (V, 3) float, a reference shape (the model's neutral mesh; any units).
    region_mask: (V,) bool, the vertices that may become landmarks (None: all of them).
    seeds68:     (S,) int vertex ids that open the ordering, in order (the 68 semantic
                 landmarks; S may be 0, then sampling starts at the region vertex with the
                 largest z, the front-most point of a face looking down +z).
    n:           total count, S <= n <= S + region size.

    Returns (n,) int64 vertex ids: ``out[:S] == seeds68``, and ``out[S:]`` are chosen one by
    one as the region vertex farthest (euclidean) from all ids chosen so far, ties going to
    the lowest vertex id. So the set of any N is the prefix ``out[:N]`` (nested sets).
    """
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {v.shape}")
    nv = len(v)
    mask = np.ones(nv, bool) if region_mask is None else np.asarray(region_mask, bool)
    if mask.shape != (nv,):
        raise ValueError(f"region_mask must be ({nv},), got {mask.shape}")
    seeds = np.asarray(seeds68, dtype=np.int64).reshape(-1)
    if seeds.size and (seeds.min() < 0 or seeds.max() >= nv):
        raise ValueError("seed vertex id outside the vertex array")
    if len(np.unique(seeds)) != len(seeds):
        raise ValueError("seed vertex ids must be unique")
    cand = np.flatnonzero(mask)
    cand = cand[~np.isin(cand, seeds)]
    n = int(n)
    if n < len(seeds) or n > len(seeds) + len(cand):
        raise ValueError(
            f"cannot choose {n} landmarks from {len(seeds)} seeds and {len(cand)} region vertices"
        )
    out = np.empty(n, np.int64)
    out[: len(seeds)] = seeds
    k = len(seeds)
    pc = v[cand]
    if k == 0 and n > 0:
        # Front-most region vertex; argmax takes the lowest id on ties (cand is sorted).
        first = int(np.argmax(pc[:, 2]))
        out[0] = cand[first]
        k = 1
    # Squared distance of every candidate to the chosen set so far.
    d2 = np.full(len(cand), np.inf)
    for s in out[:k]:
        d2 = np.minimum(d2, ((pc - v[s]) ** 2).sum(1))
    for i in range(k, n):
        j = int(np.argmax(d2))  # first index on ties: the lowest vertex id
        out[i] = cand[j]
        d2 = np.minimum(d2, ((pc - pc[j]) ** 2).sum(1))
        d2[j] = -1.0  # never again (a duplicate point would also have d2 == 0)
    return out


def _edges(faces: np.ndarray) -> np.ndarray:
    f = np.asarray(faces, dtype=np.int64)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    return np.sort(e, axis=1)


def boundary_loops(faces: np.ndarray, n_vertices: int) -> list[np.ndarray]:
    """Vertex ids of each boundary component (hole or rim) of a triangle mesh.

    faces: (T, 3) int vertex ids. A boundary edge belongs to exactly one triangle; the
    result is one sorted id array per connected set of boundary edges.
    """
    e = _edges(faces)
    u, c = np.unique(e, axis=0, return_counts=True)
    be = u[c == 1]
    if len(be) == 0:
        return []
    a = sp.coo_matrix((np.ones(len(be)), (be[:, 0], be[:, 1])), shape=(n_vertices, n_vertices))
    _, lab = csgraph.connected_components(a, directed=False)
    bv = np.unique(be)
    return [bv[lab[bv] == L] for L in np.unique(lab[bv])]


def ring_distance(faces: np.ndarray, n_vertices: int, sources: np.ndarray) -> np.ndarray:
    """(V,) edge-hop count from each vertex to the nearest of ``sources`` (inf if unreachable)."""
    e = np.unique(_edges(faces), axis=0)
    a = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n_vertices, n_vertices))
    return csgraph.dijkstra(
        a.tocsr(), directed=False, unweighted=True, indices=np.asarray(sources), min_only=True
    )


def hole_margin_mask(
    faces: np.ndarray, n_vertices: int, candidate_mask: np.ndarray, seeds: np.ndarray
) -> np.ndarray:
    """Candidates that are not inside the eye and mouth openings.

    The holes of a face mesh (eyes, mouth) are boundary loops lying wholly in
    ``candidate_mask``; the lips and lids roll inwards towards them, out of sight. For each such
    loop, the semantic landmarks nearest to it (eyelid and inner-lip contours) sit some edge
    rings away; every candidate closer to the loop than that is dropped.

    faces: (T, 3) ids; candidate_mask: (V,) bool; seeds: (S,) ids tracing the contours.
    Returns (V,) bool, a subset of ``candidate_mask``.
    """
    cand = np.asarray(candidate_mask, bool).copy()
    seeds = np.asarray(seeds, np.int64)
    for loop in boundary_loops(faces, n_vertices):
        if not cand[loop].all():
            continue  # the outer rim of the region, not a hole in it
        d = ring_distance(faces, n_vertices, loop)
        ds = d[seeds][np.isfinite(d[seeds])]
        margin = ds.min() if ds.size else 1.0  # no seed on this surface: drop the rim only
        cand &= d >= margin
    return cand

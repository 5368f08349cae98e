"""Landmark ID sets: count validation, nested farthest-point sampling, hole margins, and the
ICT-FaceKit ordering (68 semantic ids first, then dense samples on the face area)."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from facesfm.errors import InputError
from facesfm.faces.landmarks import (
    boundary_loops,
    dense_landmarks,
    hole_margin_mask,
    ring_distance,
    validate_count,
)
from facesfm.faces.types import LANDMARK_COUNTS

README_68 = [
    1225,
    1888,
    1052,
    367,
    1719,
    1722,
    2199,
    1447,
    966,
    3661,
    4390,
    3927,
    3924,
    2608,
    3272,
    4088,
    3443,
    268,
    493,
    1914,
    2044,
    1401,
    3615,
    4240,
    4114,
    2734,
    2509,
    978,
    4527,
    4942,
    4857,
    1140,
    2075,
    1147,
    4269,
    3360,
    1507,
    1542,
    1537,
    1528,
    1518,
    1511,
    3742,
    3751,
    3756,
    3721,
    3725,
    3732,
    5708,
    5695,
    2081,
    0,
    4275,
    6200,
    6213,
    6346,
    6461,
    5518,
    5957,
    5841,
    5702,
    5711,
    5533,
    6216,
    6207,
    6470,
    5517,
    5966,
]


# ---------------------------------------------------------------------------- validate_count


@pytest.mark.parametrize("n", LANDMARK_COUNTS)
def test_validate_count_accepts_known_counts(n):
    assert validate_count(n) == n


@pytest.mark.parametrize("bad", [123, 0, 801, 68.5, "abc", None])
def test_validate_count_rejects_others_with_the_choices(bad):
    with pytest.raises(InputError) as e:
        validate_count(bad)
    msg = str(e.value)
    assert msg.startswith(f"unknown landmark count {bad}; choose one of ")
    assert "68, 200, 300, 400, 500, 568, 800" in msg


# ---------------------------------------------------------------------------- FPS on toy sets


def _line(n):
    return np.c_[np.arange(n, dtype=float), np.zeros(n), np.zeros(n)]


def test_fps_on_a_line_bisects_with_lowest_id_on_ties():
    out = dense_landmarks(_line(9), None, [0], n=9)
    # From 0: farthest is 8, then the midpoint 4, then 2 and 6 (tie -> 2 first), then the
    # odd points, all at distance 1, in id order.
    assert out.tolist() == [0, 8, 4, 2, 6, 1, 3, 5, 7]


def test_fps_keeps_seeds_in_order_and_is_nested():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(300, 3))
    seeds = [17, 3, 250]
    full = dense_landmarks(v, None, seeds, n=120)
    assert full[:3].tolist() == seeds
    assert len(np.unique(full)) == 120
    for n in (3, 4, 50, 119):
        assert np.array_equal(dense_landmarks(v, None, seeds, n=n), full[:n])


def test_fps_respects_the_region_and_starts_front_most_without_seeds():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(200, 3))
    mask = v[:, 0] > 0
    out = dense_landmarks(v, mask, [], n=40)
    assert mask[out].all()
    front = np.flatnonzero(mask)[np.argmax(v[mask, 2])]
    assert out[0] == front


def test_fps_invariant_each_new_point_is_the_farthest():
    rng = np.random.default_rng(2)
    v = rng.uniform(size=(400, 3))
    out = dense_landmarks(v, None, [5, 9], n=60)
    for i in range(2, 60):
        d_chosen = np.linalg.norm(v[:, None] - v[out[:i]][None], axis=2).min(1)
        assert d_chosen[out[i]] == pytest.approx(d_chosen.max(), abs=1e-12)


def test_fps_rejects_bad_requests():
    v = _line(5)
    with pytest.raises(ValueError, match="cannot choose 7"):
        dense_landmarks(v, None, [0], n=7)
    with pytest.raises(ValueError, match="unique"):
        dense_landmarks(v, None, [1, 1], n=3)
    with pytest.raises(ValueError, match=r"\(V, 3\)"):
        dense_landmarks(v[:, :2], None, [0], n=2)


# ---------------------------------------------------------------------------- holes on a grid


def _grid_with_hole(n=9, hole=(3, 5)):
    """(n x n) vertex grid triangulated, with the quads of cells hole[0]..hole[1]-1 removed."""
    ij = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2)
    v = np.c_[ij.astype(float), np.zeros(len(ij))]
    tris = []
    for i in range(n - 1):
        for j in range(n - 1):
            if hole[0] <= i < hole[1] and hole[0] <= j < hole[1]:
                continue
            a, b, c, d = i * n + j, (i + 1) * n + j, (i + 1) * n + j + 1, i * n + j + 1
            tris += [(a, b, c), (a, c, d)]
    return v, np.array(tris)


def test_boundary_loops_and_ring_distance_on_a_grid_with_a_hole():
    v, f = _grid_with_hole()
    loops = sorted(boundary_loops(f, len(v)), key=len)
    assert [len(L) for L in loops] == [8, 32]  # 2x2-cell hole rim, 9x9 outer rim
    d = ring_distance(f, len(v), loops[0])
    assert d[loops[0]].max() == 0
    centre_row = 4 * 9  # vertex (4, 0): 3 hops left of the hole rim at (4, 3)
    assert d[centre_row] == 3


def test_hole_margin_mask_drops_what_lies_closer_to_the_hole_than_the_seeds():
    v, f = _grid_with_hole()
    n = len(v)
    inner = np.ones(n, bool)
    outer = sorted(boundary_loops(f, n), key=len)[1]
    inner[outer] = False  # the candidate region excludes the outer rim, so only the hole counts
    seed = 4 * 9 + 1  # vertex (4, 1), two rings from the hole rim
    keep = hole_margin_mask(f, n, inner, np.array([seed]))
    d = ring_distance(f, n, min(boundary_loops(f, n), key=len))
    assert np.array_equal(keep, inner & (d >= 2))
    assert keep[seed]


# ---------------------------------------------------------------------------- ICT ordering


@pytest.fixture(scope="module")
def ict_model(ict_dir, tmp_path_factory):
    from facesfm.faces.ict import ICTFaceModel

    # One cache folder for the whole session, so the second module to load is warm.
    cache = tmp_path_factory.getbasetemp() / "facesfm-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACESFM_CACHE", str(cache))
        return ICTFaceModel(ict_dir, texture_size=None)


@pytest.mark.ict
def test_ict_first_68_are_the_readme_list_and_ids_are_unique(ict_model):
    lm = ict_model.landmark_vertices
    assert lm.shape == (800,)
    assert lm[:68].tolist() == README_68
    assert ict_model.landmarks68.tolist() == README_68
    assert len(np.unique(lm)) == 800
    # The compacted mesh keeps the face part first, so its ids are ICT's own.
    assert np.array_equal(ict_model.vertex_ids[lm], lm)


@pytest.mark.ict
def test_ict_landmarks_lie_in_the_narrow_face_area(ict_model):
    lm = ict_model.landmark_vertices
    assert ict_model.face_region[lm].all()
    assert lm.max() < 6706
    assert ict_model.face_region.sum() == 6706


@pytest.mark.ict
def test_ict_nested_sets_and_fps_spacing_on_the_neutral(ict_model):
    mesh = ict_model.mesh()
    v = ict_model.neutral_vertices
    lm = ict_model.landmark_vertices
    region = ict_model.landmark_region
    assert region.sum() == 5982  # narrow face area 6706 minus rims and inward-facing vertices
    assert not (region & ~ict_model.face_region).any()
    # The stored ordering is what sampling the neutral mesh gives now.
    assert np.array_equal(dense_landmarks(v, region, lm[:68], n=800), lm)
    for n in LANDMARK_COUNTS:
        assert np.array_equal(mesh.landmarks(n), lm[:n])
    # Farthest-point invariant: beyond the seeds no two landmarks are closer than the
    # covering radius of the set, and 800 landmarks cover the face area within 6 mm.
    for n in (200, 400, 800):
        tree = cKDTree(v[lm[:n]])
        cover = tree.query(v[region])[0].max()
        nn = tree.query(v[lm[68:n]], k=2)[0][:, 1]
        assert nn.min() >= cover - 1e-9
    assert cKDTree(v[lm]).query(v[region])[0].max() < 6.0


@pytest.mark.ict
def test_ict_landmarks_avoid_eye_and_mouth_rims_and_nostrils(ict_model):
    from facesfm.geometry.mesh import vertex_normals

    v = ict_model.neutral_vertices
    f = ict_model.faces
    lm = ict_model.landmark_vertices
    face_tris = f[(f < 9409).all(1)]
    holes = [L for L in boundary_loops(face_tris, 9409) if L.max() < 6706]
    assert len(holes) == 3  # two eyes, one mouth
    for loop in holes:
        d = ring_distance(face_tris, 9409, loop)
        # No dense landmark nearer the hole than the closest semantic contour landmark.
        assert d[lm[68:]].min() >= d[lm[:68]].min()
    nz = vertex_normals(v[:9409], face_tris)[lm[68:], 2]
    assert nz.min() >= -0.3


@pytest.mark.ict
def test_ict_landmark_ids_are_the_same_vertex_for_every_identity(ict_model):
    a, _ = ict_model.sample(1)
    b, _ = ict_model.sample(2, expression=True)
    assert np.array_equal(a.landmark_vertices, b.landmark_vertices)
    assert np.array_equal(a.landmarks(68), README_68)

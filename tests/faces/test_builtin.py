"""The built-in head: a closed, outward-facing mesh with facial relief where a face has it,
anatomically ordered landmarks, and deterministic identities."""

import json

import numpy as np
import pytest
import trimesh

from facesfm.faces.builtin import N_EXPRESSION, N_IDENTITY, BuiltinFaceModel
from facesfm.faces.types import LANDMARK_COUNTS

MIRROR = [(k, 16 - k) for k in range(8)] + [
    (17, 26),
    (18, 25),
    (19, 24),
    (20, 23),
    (21, 22),
    (31, 35),
    (32, 34),
    (36, 45),
    (37, 44),
    (38, 43),
    (39, 42),
    (40, 47),
    (41, 46),
    (48, 54),
    (49, 53),
    (50, 52),
    (59, 55),
    (58, 56),
    (60, 64),
    (61, 63),
    (67, 65),
]
MIDLINE = [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]


@pytest.fixture(scope="module")
def model():
    return BuiltinFaceModel(texture_size=0)


@pytest.fixture(scope="module")
def faces3(model):
    return [model.sample(s)[0] for s in (0, 1, 2)]


def test_size_and_topology(model):
    v, f = model.template, model.faces
    assert 10_000 <= len(v) <= 30_000
    tm = trimesh.Trimesh(v, f, process=False)
    assert tm.is_watertight and tm.is_winding_consistent
    assert tm.volume > 0  # outward normals
    assert tm.euler_number == 2  # one closed sphere-like surface
    # real head proportions (mm)
    lm = v[model.landmark_vertices[:68]]
    assert 140 <= v[:, 0].max() - 2 * 0 - v[:, 0].min() <= 200  # incl. ears
    head_w = np.ptp(v[(np.abs(v[:, 2]) < 20) & (np.abs(v[:, 1] - 40) < 5)][:, 0])
    assert 140 <= head_w <= 165
    assert 200 <= v[:, 1].max() - lm[8, 1] <= 240  # vertex to menton
    assert 90 <= lm[30, 2] <= 115  # nose tip in front of the head centre


def test_face_spacing(model):
    v, f = model.template, model.faces
    reg = model.face_region
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e = e[reg[e[:, 0]] & reg[e[:, 1]]]
    length = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
    assert 1.5 <= np.median(length) <= 3.5


def test_face_normals_point_forward(model):
    v, f = model.template, model.faces
    tm = trimesh.Trimesh(v, f, process=False)
    fr = model.face_region[f].all(1)
    assert tm.face_normals[fr, 2].mean() > 0.6


def test_relief(model):
    v = model.template
    lm = v[model.landmark_vertices[:68]]
    reg = v[model.face_region]
    # the nose tip is the most forward point of the face and well in front of the cheeks
    assert lm[30, 2] >= reg[:, 2].max() - 3.0
    cheeks = v[(np.abs(np.abs(v[:, 0]) - 45) < 3) & (np.abs(v[:, 1] + 25) < 3) & (v[:, 2] > 0)]
    assert lm[30, 2] - cheeks[:, 2].max() >= 15.0
    # eyes sit in sockets: behind the brows and the cheekbones, and behind the nasion
    eyes = lm[[37, 38, 40, 41, 43, 44, 46, 47], 2].mean()
    assert lm[[19, 20, 23, 24], 2].mean() - eyes >= 5.0
    cheekbone = v[(np.abs(np.abs(v[:, 0]) - 30) < 3) & (np.abs(v[:, 1] + 15) < 3) & (v[:, 2] > 0)]
    assert cheekbone[:, 2].max() - eyes >= 2.0
    assert lm[27, 2] - eyes >= 8.0
    # lips stand out of the mouth corners, the mouth line is a groove
    assert lm[[51, 57], 2].min() - lm[[48, 54], 2].max() >= 5.0
    # ears stand out of the side of the head
    side = v[(np.abs(v[:, 1] + 5) < 20) & (np.abs(v[:, 2] + 8) < 10)]
    assert np.abs(side[:, 0]).max() >= 85.0


def test_landmarks_anatomical_order(faces3):
    for mesh in faces3:
        lm = mesh.vertices[mesh.landmarks(68)]
        for a, b in MIRROR:
            assert abs(lm[a, 0] + lm[b, 0]) < 0.5 and lm[a, 0] < 0 < lm[b, 0], (a, b)
            np.testing.assert_allclose(lm[a, 1:], lm[b, 1:], atol=0.5)
        assert np.abs(lm[MIDLINE, 0]).max() < 0.5
        brows, eyes = lm[17:27, 1].mean(), lm[36:48, 1].mean()
        assert brows > eyes + 10 > lm[30, 1] + 10 > lm[48:68, 1].mean() + 20 > lm[8, 1] + 20
        # jaw contour goes down to the chin and back up
        assert np.all(np.diff(lm[:9, 1]) < 0) and np.all(np.diff(lm[8:17, 1]) > 0)
        # lips closed: inner upper and lower lip on neighbouring grid rows, 60/64 at corners
        gap = np.linalg.norm(lm[[61, 62, 63]] - lm[[67, 66, 65]], axis=1)
        assert gap.max() < 4.0 and np.all(lm[[61, 62, 63], 1] > lm[[67, 66, 65], 1])
        # eye corners: outer corners further out than inner ones
        assert lm[36, 0] < lm[39, 0] < lm[42, 0] < lm[45, 0]


def test_landmark_ids(model, faces3):
    ids = model.landmark_vertices
    assert ids.shape == (800,) and ids.dtype == np.int64
    assert len(np.unique(ids)) == 800
    assert model.face_region[ids].all()
    for mesh in faces3:
        np.testing.assert_array_equal(mesh.landmark_vertices, ids)
        for n in LANDMARK_COUNTS:
            np.testing.assert_array_equal(mesh.landmarks(n), ids[:n])
    # dense landmarks spread over the face: no two closer than ~2 mm, cover it to ~10 mm
    p = model.template[ids]
    d = np.linalg.norm(p[:, None] - p[None], axis=-1) + np.eye(800) * 1e9
    assert d.min() > 1.5
    reg = model.template[model.face_region]
    gap = np.sqrt(((reg[:, None] - p[None]) ** 2).sum(-1).min(1))
    assert gap.max() < 12.0


def test_identities(model, faces3):
    m0, c0 = model.sample(0)
    np.testing.assert_array_equal(m0.vertices, faces3[0].vertices)
    assert c0["source"] == "builtin"
    assert len(c0["w_id"]) == N_IDENTITY and len(c0["w_ex"]) == N_EXPRESSION
    json.dumps(c0)
    assert not np.any(c0["w_ex"])
    for a in range(3):
        for b in range(a + 1, 3):
            rms = np.sqrt(((faces3[a].vertices - faces3[b].vertices) ** 2).sum(1).mean())
            assert rms > 1.5
    # no folded triangles relative to the template in the face region
    f = model.faces
    fr = model.face_region[f].all(1)
    n0 = trimesh.Trimesh(model.template, f, process=False).face_normals[fr]
    for mesh in faces3:
        n1 = trimesh.Trimesh(mesh.vertices, f, process=False).face_normals[fr]
        assert (np.einsum("ij,ij->i", n0, n1) > 0).mean() > 0.999
        assert mesh.face_region is not None and mesh.face_region.sum() == model.face_region.sum()


def test_expression(model):
    neutral, _ = model.sample(3)
    smiling, c = model.sample(3, expression=True)
    assert np.any(c["w_ex"]) and np.all(np.asarray(c["w_ex"]) <= 1)
    np.testing.assert_array_equal(np.asarray(c["w_id"]), model.coefficients(3)[0])
    d = smiling.vertices - neutral.vertices
    assert np.abs(d).max() < 12.0  # mild
    lm = smiling.vertices[smiling.landmarks(68)]
    assert np.linalg.norm(lm[[61, 62, 63]] - lm[[67, 66, 65]], axis=1).max() < 4.0
    # a smile lifts the mouth corners relative to the lip centre
    lm0 = neutral.vertices[neutral.landmarks(68)]
    lift = (lm[[48, 54], 1] - lm[62, 1]) - (lm0[[48, 54], 1] - lm0[62, 1])
    assert np.all(lift > 0.3 * c["w_ex"][0])


def test_bad_coefficients(model):
    with pytest.raises(ValueError, match="w_id"):
        model.vertices(np.zeros(3))


def test_extreme_coefficients_do_not_fold(model):
    # coefficients are clipped to +-2.5 sigma; at those corners the surface must stay a
    # plausible head: no triangle turns over above the neck cut, sizes stay human
    f = model.faces
    n0 = trimesh.Trimesh(model.template, f, process=False).face_normals
    keep = model.template[f].mean(1)[:, 1] > -150.0
    rng = np.random.default_rng(0)
    cases = [np.full(N_IDENTITY, 2.5), np.full(N_IDENTITY, -2.5)]
    cases += [rng.choice([-2.5, 2.5], N_IDENTITY) for _ in range(2)]
    for w in cases:
        v = model.vertices(w, np.ones(N_EXPRESSION))
        n1 = trimesh.Trimesh(v, f, process=False).face_normals
        assert (np.einsum("ij,ij->i", n0, n1)[keep] > 0).all()
        lm = v[model.landmark_vertices[:68]]
        assert 190 <= v[:, 1].max() - lm[8, 1] <= 250
        assert 85 <= lm[30, 2] <= 125
        assert 25 <= lm[42, 0] - lm[39, 0] <= 45  # inner eye corners (human: 26-38 mm)
        assert 35 <= lm[54, 0] - lm[48, 0] <= 72  # mouth width (human: 40-60 mm, +smile)

"""Texture orientation of user meshes: a texture with a red marker in the top-left
of its image, on a plane whose top-left has uv in that marker, renders red at the top-left.

UV conventions: OBJ ``vt`` and trimesh's in-memory ``TextureVisuals.uv`` put (0, 0) at the
bottom-left of the image (v up); glTF ``TEXCOORD_0`` puts it at the top-left (v down, trimesh
flips v when it reads or writes glTF). ``FaceMesh.face_uv`` is v up. The files here are
written twice: by hand, each in its format's own convention (independent of trimesh's
writer), and by trimesh from v-up UVs, as the issue's reporter built theirs.
"""

import io
import json
import struct

import numpy as np
import pytest
from PIL import Image

from facesfm.faces.mesh import load_textured_mesh
from facesfm.faces.types import FaceMesh
from facesfm.geometry.camera import intrinsics, look_at, project, transform
from facesfm.render.lights import Lighting
from facesfm.render.renderer import FaceRenderer

SIDE_MM = 200.0  # a head-sized plane facing +z, centred on the origin
N_GRID = 11  # 121 vertices: enough for 68 landmarks
TEX_H, TEX_W = 48, 80  # not square, so a u/v swap moves the marker too
RED, GREEN = (220, 0, 0), (0, 200, 0)
# Probe points (x, y) in mm, away from the quadrant borders; the marker covers x < 0, y > 0.
PROBES = np.array([(x, y) for x in (-75, -50, -25, 25, 50, 75) for y in (-75, -50, -25, 25, 50, 75)],
                  dtype=np.float64)
IN_MARKER = (PROBES[:, 0] < 0) & (PROBES[:, 1] > 0)


def _texture():
    """(TEX_H, TEX_W, 3) uint8: green, red in the top-left quadrant of the image (row 0 is
    the top)."""
    img = np.empty((TEX_H, TEX_W, 3), np.uint8)
    img[:] = GREEN
    img[: TEX_H // 2, : TEX_W // 2] = RED
    return img


def _plane():
    """Grid vertices (V, 3) mm, triangles (T, 3) facing +z, and per-vertex uv (V, 2) v up:
    uv = (0, 1) at the top-left corner (x = -100, y = +100), the top-left of the image."""
    s = np.linspace(-SIDE_MM / 2, SIDE_MM / 2, N_GRID)
    x, y = np.meshgrid(s, s)
    v = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], 1)
    i, j = np.meshgrid(np.arange(N_GRID - 1), np.arange(N_GRID - 1), indexing="ij")
    a = (i * N_GRID + j).ravel()
    b, c, d = a + 1, a + N_GRID + 1, a + N_GRID
    f = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    uv = v[:, :2] / SIDE_MM + 0.5
    return v, f, uv


def _png(img):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _write_obj(path, v, f, uv, img):
    """OBJ + MTL + PNG written by hand; ``vt`` is v up (the OBJ convention)."""
    (path.parent / "marker.png").write_bytes(_png(img))
    (path.parent / "marker.mtl").write_text("newmtl skin\nKd 1 1 1\nmap_Kd marker.png\n")
    lines = ["mtllib marker.mtl", "usemtl skin"]
    lines += [f"v {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}" for p in v]
    lines += [f"vt {t[0]:.6f} {t[1]:.6f}" for t in uv]
    lines += ["f " + " ".join(f"{k + 1}/{k + 1}" for k in tri) for tri in f]
    path.write_text("\n".join(lines) + "\n")


def _write_glb(path, v, f, uv, img):
    """A binary glTF 2.0 written by hand; TEXCOORD_0 is v down (the glTF convention)."""
    tex = uv.copy()
    tex[:, 1] = 1.0 - tex[:, 1]
    parts = [v.astype("<f4").tobytes(), tex.astype("<f4").tobytes(),
             f.astype("<u4").tobytes(), _png(img)]
    views, blob = [], b""
    for p in parts:
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(p)})
        blob += p + b"\0" * (-len(p) % 4)
    gltf = {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "TEXCOORD_0": 1},
                                    "indices": 2, "material": 0}]}],
        "materials": [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0},
                                                "metallicFactor": 0.0}}],
        "textures": [{"source": 0}],
        "images": [{"bufferView": 3, "mimeType": "image/png"}],
        "buffers": [{"byteLength": len(blob)}],
        "bufferViews": views,
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": len(v), "type": "VEC3",
             "min": v.min(0).tolist(), "max": v.max(0).tolist()},
            {"bufferView": 1, "componentType": 5126, "count": len(v), "type": "VEC2"},
            {"bufferView": 2, "componentType": 5125, "count": f.size, "type": "SCALAR"},
        ],
    }
    js = json.dumps(gltf).encode()
    js += b" " * (-len(js) % 4)
    body = (struct.pack("<II", len(js), 0x4E4F534A) + js
            + struct.pack("<II", len(blob), 0x004E4942) + blob)
    path.write_bytes(struct.pack("<III", 0x46546C67, 2, 12 + len(body)) + body)


def _write_trimesh(path, v, f, uv, img):
    """The reporter's way: trimesh from v-up UVs, exported as OBJ or GLB."""
    import trimesh

    tm = trimesh.Trimesh(v, f, process=False)
    tm.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(img))
    tm.export(path)


FILES = {
    "hand.obj": _write_obj,
    "hand.glb": _write_glb,
    "trimesh.obj": _write_trimesh,
    "trimesh.glb": _write_trimesh,
}


@pytest.fixture(scope="module")
def marker_files(tmp_path_factory):
    """name -> path of the marker plane written in each way, each in its own folder."""
    v, f, uv = _plane()
    out = {}
    for name, write in FILES.items():
        d = tmp_path_factory.mktemp(name.replace(".", "_"))
        out[name] = d / name
        write(out[name], v, f, uv, _texture())
    return out


def _is_red(rgb):
    rgb = np.asarray(rgb, dtype=np.float64)
    return (rgb[..., 0] > 2 * rgb[..., 1] + 20) & (rgb[..., 0] > 2 * rgb[..., 2] + 20)


def _is_green(rgb):
    rgb = np.asarray(rgb, dtype=np.float64)
    return (rgb[..., 1] > 2 * rgb[..., 0] + 20) & (rgb[..., 1] > 2 * rgb[..., 2] + 20)


def _colours_at_probes(rgb, depth, K, cam_T_world):
    """(P, 3) rendered colour at the pixel each probe point projects to (all must be drawn)."""
    p = np.concatenate([PROBES, np.zeros((len(PROBES), 1))], 1)
    ij = np.round(project(K, transform(cam_T_world, p))).astype(int)
    assert (ij >= 0).all() and (ij[:, 0] < rgb.shape[1]).all() and (ij[:, 1] < rgb.shape[0]).all()
    assert (depth[ij[:, 1], ij[:, 0]] > 0).all()
    return rgb[ij[:, 1], ij[:, 0]]


def _assert_marker_top_left(colours):
    np.testing.assert_array_equal(_is_red(colours), IN_MARKER, err_msg=str(colours))
    np.testing.assert_array_equal(_is_green(colours), ~IN_MARKER, err_msg=str(colours))


@pytest.mark.parametrize("name", list(FILES))
def test_loader_gives_v_up_uvs_and_the_image_top_row_first(marker_files, name):
    """The loader's side: FaceMesh.face_uv is v up whatever the file's own convention, and
    the texture's row 0 is the image's top row."""
    m = load_textured_mesh(marker_files[name])
    np.testing.assert_array_equal(m.texture, _texture())
    corners = m.vertices[m.faces]  # (T, 3, 3), already centred: the plane is
    np.testing.assert_allclose(m.face_uv, corners[..., :2] / SIDE_MM + 0.5, atol=1e-5)


def test_renderer_samples_v_up_uvs_against_the_image_top_row_first():
    """The renderer's side: a FaceMesh made in code (uv v up, texture row 0 at the top)."""
    v, f, uv = _plane()
    mesh = FaceMesh(vertices=v, faces=f, landmark_vertices=np.arange(3), texture=_texture(),
                    face_uv=uv[f].astype(np.float32), name="marker")
    neutral = Lighting(ambient=1.0, key=0.0, key_dir=np.array([0.0, 0, 1]), fill=0.0,
                       fill_dir=np.array([0.0, 0, 1]), color=np.ones(3), temperature=6500.0)
    K = intrinsics(250.0, 128, 128)
    T = look_at(np.array([0.0, 0.0, 500.0]), np.zeros(3))  # frontal, +y up in the image
    with FaceRenderer(128, 128, K) as r:
        r.set_mesh(mesh, neutral)
        fr = r.render(T)
    colours = _colours_at_probes(fr.rgb, fr.depth, K, T)
    _assert_marker_top_left(colours)
    # unlit and magnified: the texel colours come through exactly (up to 8-bit rounding)
    expected = np.where(IN_MARKER[:, None], RED, GREEN)
    assert np.abs(colours.astype(int) - expected).max() <= 1


@pytest.mark.parametrize("name", list(FILES))
def test_facesfm_render_faces_mesh_puts_the_marker_top_left(marker_files, tmp_path, name):
    """End to end through `facesfm render --faces mesh`, frontal frame."""
    from facesfm.cli import main
    from facesfm.data.format import load_sequence

    out = tmp_path / "ds"
    main(["render", "--out", str(out), "--faces", "mesh", "--mesh", str(marker_files[name]),
          "--frames", "1", "--yaw-range", "0,0", "--size", "128", "--focal", "250",
          "--landmarks", "68", "--quiet"])
    seq = load_sequence(out / "00000_00")
    assert abs(seq.yaw_deg[0]) < 1e-9
    colours = _colours_at_probes(seq.image(0), seq.depth(0), seq.K, seq.cam_T_world[0])
    _assert_marker_top_left(colours)

"""Offscreen rendering of a FaceMesh with pyrender: colour, depth and face-region mask.

Conventions (see :mod:`facesfm.geometry.camera`): OpenCV cameras, pixel centre of (row r,
col c) at uv=(c, r). OpenGL puts pixel centres at +0.5, so the principal point handed to
pyrender is ``(cx + 0.5, cy + 0.5)``; OpenGL cameras look down -z with +y up, so pyrender's
camera pose is ``world_T_cam @ diag(1, -1, -1, 1)``. With these two conversions a vertex
that :func:`facesfm.geometry.camera.project` sends to uv is drawn at that uv, and the depth
buffer holds camera-frame z in mm at every pixel centre (0 = background).

Shading is Lambertian with an ambient term and directional lights fixed in the world frame,
computed per vertex in linear light and baked into vertex colours; pyrender then draws
unlit (``RenderFlags.FLAT``): ``colour = albedo * shade**(1/2.2)``. This is view-independent
(a surface point looks the same from every camera) and cheaper than pyrender's PBR shader.

The face mask is written into the alpha channel of the same pass: every triangle whose three
vertices are in ``FaceMesh.face_region`` carries alpha 1, all others alpha 0, so the mask is
"the visible surface at this pixel centre belongs to the face region" at no extra cost.

One :class:`FaceRenderer` owns one OpenGL context and one scene; :meth:`FaceRenderer.set_mesh`
uploads a mesh once, and :meth:`FaceRenderer.render` only moves the camera.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from facesfm.faces.types import FaceMesh
from facesfm.geometry.camera import invert_pose, transform
from facesfm.render.lights import Lighting, LightRig, rig_sheen, shade_vertices
from facesfm.render.visibility import outward_sign, vertex_normals

__all__ = [
    "FaceRenderer",
    "RenderedFrame",
    "make_background",
    "opencv_to_pyrender_pose",
]

os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

_GL_FROM_CV = np.diag([1.0, -1.0, -1.0, 1.0])

def make_background(
    kind: str, color, height: int, width: int, rng: np.random.Generator
) -> np.ndarray:
    """A background image (H, W, 3) uint8.

    kind: "color" (constant ``color``), "noise" (smooth seeded colour noise plus grain),
    "gradient" (seeded linear gradient between two colours) or "random" (noise or gradient).
    """
    if kind == "random":
        kind = "noise" if rng.random() < 0.5 else "gradient"
    if kind == "color":
        return np.broadcast_to(np.asarray(color, dtype=np.uint8), (height, width, 3)).copy()
    if kind == "gradient":
        c0, c1 = rng.uniform(0, 255, (2, 3))
        ang = rng.uniform(0, 2 * np.pi)
        vv, uu = np.mgrid[0:height, 0:width].astype(np.float64)
        s = (uu - width / 2) * np.cos(ang) + (vv - height / 2) * np.sin(ang)
        s = (s - s.min()) / max(s.max() - s.min(), 1e-9)
        img = c0 + s[..., None] * (c1 - c0)
        return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    if kind == "noise":
        g = 8
        # blotches of moderate contrast around one random base colour (a wall, a room)
        base = rng.uniform(40, 215, 3)
        coarse = np.clip(base + rng.uniform(-60, 60, (g, g, 1)) + rng.uniform(-25, 25, (g, g, 3)),
                         0, 255)
        # Separable linear upsampling of the coarse grid to the image size.
        ys = np.linspace(0, g - 1, height)
        xs = np.linspace(0, g - 1, width)
        y0 = np.clip(np.floor(ys).astype(int), 0, g - 2)
        x0 = np.clip(np.floor(xs).astype(int), 0, g - 2)
        wy = (ys - y0)[:, None, None]
        wx = (xs - x0)[None, :, None]
        rows = coarse[y0] * (1 - wy) + coarse[y0 + 1] * wy  # (H, g, 3)
        img = rows[:, x0] * (1 - wx) + rows[:, x0 + 1] * wx
        return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    raise ValueError(f"unknown background kind {kind!r}")


def opencv_to_pyrender_pose(cam_T_world: np.ndarray) -> np.ndarray:
    """pyrender camera pose (world_T_cam with OpenGL axes) of an OpenCV ``cam_T_world``."""
    return invert_pose(np.asarray(cam_T_world, dtype=np.float64)) @ _GL_FROM_CV


def _memoize_programs(renderer) -> None:
    """Compile each shader program once per renderer.

    pyrender keys its program cache on the current GL context object; under OSMesa PyOpenGL
    returns a new, unequal pointer object on every call, so every frame missed the cache,
    recompiled (JIT in llvmpipe) and leaked a program. One FaceRenderer owns one context, so
    the shaders and defines alone are a sufficient key.
    """
    cache = renderer._program_cache
    original = cache.get_program
    memo: dict = {}

    def get_program(vertex_shader, fragment_shader, geometry_shader=None, defines=None):
        key = (vertex_shader, fragment_shader, geometry_shader,
               tuple(sorted((defines or {}).items())))
        if key not in memo:
            memo[key] = original(vertex_shader, fragment_shader, geometry_shader, defines)
        return memo[key]

    cache.get_program = get_program


@dataclass(frozen=True)
class RenderedFrame:
    """One rendered view.

    rgb:   (H, W, 3) uint8, background composited where depth is 0.
    depth: (H, W) float32 camera-frame z in mm at each pixel centre, 0 = background.
    mask:  (H, W) bool, the visible surface belongs to the face region.
    """

    rgb: np.ndarray
    depth: np.ndarray
    mask: np.ndarray


class FaceRenderer:
    """Renders one mesh at a time from OpenCV cameras; reuse it for a whole sequence.

    width, height: image size (px); K: (3, 3) OpenCV intrinsics (fx, fy, cx, cy used).
    """

    def __init__(self, width: int, height: int, K: np.ndarray):
        import pyrender

        self._pyrender = pyrender
        self.width = int(width)
        self.height = int(height)
        self.K = np.asarray(K, dtype=np.float64)
        if self.K.shape != (3, 3):
            raise ValueError(f"FaceRenderer: K must be (3, 3), got {self.K.shape}")
        self._r = pyrender.OffscreenRenderer(self.width, self.height)
        _memoize_programs(self._r._renderer)
        self._scene = pyrender.Scene(bg_color=[0.0, 0.0, 0.0, 0.0], ambient_light=[1, 1, 1])
        self._camera = pyrender.IntrinsicsCamera(
            fx=self.K[0, 0],
            fy=self.K[1, 1],
            cx=self.K[0, 2] + 0.5,
            cy=self.K[1, 2] + 0.5,
            znear=1.0,
            zfar=10000.0,
        )
        self._cam_node = self._scene.add(self._camera, pose=np.eye(4))
        self._mesh_node = None
        self._vertices = None
        self._shading: dict = {}
        self._msaa_checked = False

    def set_intrinsics(self, K: np.ndarray) -> None:
        """Render through ``K`` (3, 3) from now on (same image size)."""
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"FaceRenderer: K must be (3, 3), got {K.shape}")
        self.K = K
        self._camera.fx, self._camera.fy = K[0, 0], K[1, 1]
        self._camera.cx, self._camera.cy = K[0, 2] + 0.5, K[1, 2] + 0.5

    # -- scene -------------------------------------------------------------------------
    def set_mesh(self, mesh: FaceMesh, lighting: Lighting, rig: LightRig | None = None) -> None:
        """Upload ``mesh`` shaded by ``lighting`` (and the extra light ``rig``), replacing the
        previous one. A rig with a specular sheen re-shades the mesh at every render."""
        pyrender = self._pyrender
        v = np.asarray(mesh.vertices, dtype=np.float64)
        f = np.asarray(mesh.faces, dtype=np.int64)
        normals = vertex_normals(v, f)
        normals *= outward_sign(v, normals)
        irradiance = shade_vertices(normals, lighting, rig)
        if mesh.vertex_colors is not None and mesh.texture is None:
            albedo = np.asarray(mesh.vertex_colors, dtype=np.float64)
        elif mesh.texture is None:
            albedo = np.full((len(v), 3), 0.7)  # plain grey albedo
        else:
            albedo = None  # the texture carries it
        region = (
            np.ones(len(f), dtype=bool)
            if mesh.face_region is None
            else np.asarray(mesh.face_region, dtype=bool)[f].all(axis=1)
        )
        # GPU vertices are triangle corners that differ in (vertex, uv, mask alpha): texture
        # seams and the face-region border split a vertex, elsewhere corners are shared
        # (indexed drawing, ~6x fewer vertices to shade than one per corner).
        T = len(f)
        uv = (np.zeros((T, 3, 2), np.float32) if mesh.texture is None
              else np.asarray(mesh.face_uv, dtype=np.float32))
        key = np.empty((T * 3, 4), dtype=np.int64)
        key[:, 0] = f.reshape(-1)
        key[:, 1:3] = uv.reshape(-1, 2).view(np.int32)  # exact float bits
        key[:, 3] = np.repeat(region, 3)
        corners, first, inverse = np.unique(key, axis=0, return_index=True,
                                            return_inverse=True)
        vid = corners[:, 0]
        kwargs = {}
        if mesh.texture is not None:
            # face_uv is v up with the image's row 0 at the top; pyrender uploads the rows
            # bottom first (GL's t = 0 is the first row uploaded), so both go in as they are
            tex = pyrender.Texture(
                source=np.ascontiguousarray(mesh.texture[..., :3], dtype=np.uint8),
                source_channels="RGB",
            )
            kwargs["texcoord_0"] = uv.reshape(-1, 2)[first]
            material = pyrender.MetallicRoughnessMaterial(
                baseColorTexture=tex, doubleSided=True, alphaMode="OPAQUE"
            )
        else:
            material = pyrender.MetallicRoughnessMaterial(doubleSided=True, alphaMode="OPAQUE")
        self._vertices = v
        self._upload = {
            "positions": v[vid].astype(np.float32), "indices": inverse.reshape(T, 3)
            .astype(np.uint32), "material": material, "vid": vid, "alpha": corners[:, 3],
            **kwargs}
        self._shading = {"irradiance": irradiance, "albedo": albedo, "normals": normals,
                         "lighting": lighting, "rig": rig}
        if rig is not None and rig.specular > 0:
            # the sheen over the albedo, as a multiplier of it: the texture's albedo at a
            # vertex is its nearest texel (the sheen is smooth, the texture need not be)
            self._shading["sheen_albedo"] = (
                (albedo if albedo is not None else mesh.vertex_rgb() / 255.0) ** 2.2)
        self._shade(None)

    def _shade(self, centre: np.ndarray | None) -> None:
        """(Re-)upload the mesh with its vertex colours: albedo x shade**(1/2.2) in sRGB,
        plus the sheen seen from camera centre ``centre`` where the rig has one."""
        sh, up = self._shading, self._upload
        irr = sh["irradiance"]
        if centre is not None:
            sheen = rig_sheen(self._vertices, sh["normals"], sh["lighting"], sh["rig"], centre)
            irr = irr + sheen / np.maximum(sh["sheen_albedo"], 0.02)
        shade = irr ** (1.0 / 2.2)  # linear -> sRGB multiplier
        if sh["albedo"] is not None:
            shade = shade * sh["albedo"]
        color = np.empty((len(up["vid"]), 4), dtype=np.float32)
        color[:, :3] = shade[up["vid"]]
        color[:, 3] = up["alpha"]
        prim = self._pyrender.Primitive(
            positions=up["positions"], color_0=color, indices=up["indices"],
            material=up["material"],
            **({"texcoord_0": up["texcoord_0"]} if "texcoord_0" in up else {}))
        if self._mesh_node is not None:
            self._scene.remove_node(self._mesh_node)
        self._mesh_node = self._scene.add(self._pyrender.Mesh([prim]))

    # -- rendering ---------------------------------------------------------------------
    def clip_planes(self, cam_T_world: np.ndarray, margin: float = 10.0) -> tuple[float, float]:
        """znear, zfar tight around the mesh seen from ``cam_T_world`` (mm)."""
        z = transform(np.asarray(cam_T_world, dtype=np.float64), self._vertices)[:, 2]
        znear = max(1.0, float(z.min()) - margin)
        zfar = max(znear + 2 * margin, float(z.max()) + margin)
        return znear, zfar

    def render(
        self,
        cam_T_world: np.ndarray,
        background: np.ndarray | None = None,
        clip_margin: float = 10.0,
    ) -> RenderedFrame:
        """Render the current mesh from an OpenCV ``cam_T_world`` (4, 4).

        background: (H, W, 3) uint8 shown where nothing is drawn (default black).
        """
        if self._mesh_node is None:
            raise RuntimeError("FaceRenderer.render: call set_mesh first")
        cam_T_world = np.asarray(cam_T_world, dtype=np.float64)
        if cam_T_world.shape != (4, 4):
            raise ValueError(f"render: cam_T_world must be (4, 4), got {cam_T_world.shape}")
        self._camera.znear, self._camera.zfar = self.clip_planes(cam_T_world, clip_margin)
        if "sheen_albedo" in self._shading:  # a view-dependent sheen: re-shade for this camera
            self._shade(invert_pose(cam_T_world)[:3, 3])
        self._scene.set_pose(self._cam_node, opencv_to_pyrender_pose(cam_T_world))
        rgba, depth = self._draw()
        fg = depth > 0
        rgb = rgba[..., :3]
        if background is not None:
            if background.shape != (self.height, self.width, 3):
                raise ValueError(f"render: background must be ({self.height}, {self.width}, 3)")
            rgb = np.where(fg[..., None], rgb, background)
        else:
            rgb = np.where(fg[..., None], rgb, 0).astype(np.uint8)
        mask = fg & (rgba[..., 3] >= 128)
        return RenderedFrame(
            rgb=np.ascontiguousarray(rgb, dtype=np.uint8),
            depth=np.ascontiguousarray(depth, dtype=np.float32),
            mask=mask,
        )

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        """One unlit pass: (H, W, 4) uint8 RGBA (alpha = face region) and (H, W) depth."""
        from pyrender import RenderFlags

        platform = self._r._platform
        if platform.supports_framebuffers():
            # EGL / pyglet: pyrender renders into a 4x multisampled framebuffer and resolves
            # depth from one sample, which need not sit at the pixel centre. Turn MSAA off
            # once so depth and mask are sampled at pixel centres as on OSMesa.
            rgba, depth = self._r.render(self._scene, RenderFlags.FLAT | RenderFlags.RGBA)
            if not self._msaa_checked:
                self._msaa_checked = True
                if self._disable_msaa():
                    rgba, depth = self._r.render(
                        self._scene, RenderFlags.FLAT | RenderFlags.RGBA
                    )
            return np.asarray(rgba), np.asarray(depth)
        # OSMesa draws straight into its RGBA buffer (no MSAA); pyrender only reads RGB back,
        # so read RGBA here ourselves.
        from OpenGL.GL import (
            GL_FRONT,
            GL_READ_FRAMEBUFFER,
            GL_RGBA,
            GL_UNSIGNED_BYTE,
            glBindFramebuffer,
            glReadBuffer,
            glReadPixels,
        )

        platform.make_current()
        renderer = self._r._renderer
        renderer.viewport_width = self.width
        renderer.viewport_height = self.height
        renderer.render(self._scene, RenderFlags.FLAT)
        depth = renderer.read_depth_buf()
        glBindFramebuffer(GL_READ_FRAMEBUFFER, 0)
        glReadBuffer(GL_FRONT)
        buf = glReadPixels(0, 0, self.width, self.height, GL_RGBA, GL_UNSIGNED_BYTE)
        rgba = np.frombuffer(buf, dtype=np.uint8).reshape(self.height, self.width, 4)
        return np.flip(rgba, axis=0), np.asarray(depth)

    def _disable_msaa(self) -> bool:
        """Re-allocate pyrender's multisampled buffers with one sample. True if done."""
        from OpenGL.GL import (
            GL_DEPTH_COMPONENT24,
            GL_RENDERBUFFER,
            GL_RGBA,
            glBindRenderbuffer,
            glRenderbufferStorageMultisample,
        )

        renderer = self._r._renderer
        cb = getattr(renderer, "_main_cb_ms", None)
        db = getattr(renderer, "_main_db_ms", None)
        if cb is None or db is None:
            return False
        self._r._platform.make_current()
        glBindRenderbuffer(GL_RENDERBUFFER, cb)
        glRenderbufferStorageMultisample(GL_RENDERBUFFER, 0, GL_RGBA, self.width, self.height)
        glBindRenderbuffer(GL_RENDERBUFFER, db)
        glRenderbufferStorageMultisample(
            GL_RENDERBUFFER, 0, GL_DEPTH_COMPONENT24, self.width, self.height
        )
        return True

    def close(self) -> None:
        """Free the OpenGL context."""
        if self._r is not None:
            self._r.delete()
            self._r = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

"""Classical baseline: triangulate the landmark tracks, then Ceres bundle adjustment via pycolmap,
as a COLMAP user would (camera 0 fixed, intrinsics fixed, DENSE_SCHUR by default).

Only the classical parameterisation (Ceres has no built-in cost for equation 2). Observation
weights must be 0 or 1 (COLMAP's reprojection cost is unweighted). The Ceres cost is
``0.5 * sum |r|^2`` (with its loss), the same objective as our backends, so final costs compare
directly. pycolmap is optional: ``pip install pycolmap==4.2.1`` (or ``facesfm[colmap]``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from facesfm.errors import InputError
from facesfm.solvers.problem import (
    BAProblem,
    BAResult,
    BAState,
    CauchyKernel,
    HuberKernel,
    Parameterization,
    SolverError,
    TrivialKernel,
    complete_state,
)
from facesfm.solvers.residuals import linearize, rms_px

__all__ = ["ColmapBaseline", "triangulate_tracks"]


def _pycolmap():
    try:
        import pycolmap
        import pycolmap.pyceres
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise InputError(
            "the COLMAP baseline needs pycolmap: pip install 'pycolmap==4.2.1' "
            "(or pip install -e '.[colmap]')"
        ) from e
    return pycolmap


def triangulate_tracks(problem: BAProblem, poses: torch.Tensor) -> torch.Tensor:
    """DLT triangulation of every landmark from its two widest-baseline observing views.

    poses: (F, 4, 4) cam_T_world. Returns (N, 3) world points (float64, CPU). Landmarks seen in
    fewer than two frames raise :class:`SolverError`.
    """
    K = problem.K.detach().cpu().double().numpy()
    uv = problem.uv.detach().cpu().double().numpy()
    seen = (problem.weight.detach().cpu() > 0).numpy()
    T = poses.detach().cpu().double().numpy()
    F, N = seen.shape
    if (seen.sum(0) < 2).any():
        j = int(np.nonzero(seen.sum(0) < 2)[0][0])
        raise SolverError(f"triangulation: landmark {j} is seen in fewer than 2 frames")
    C = -np.einsum("fba,fb->fa", T[:, :3, :3], T[:, :3, 3])
    D = np.linalg.norm(C[:, None] - C[None], axis=-1)
    m = seen.T.astype(np.float64)  # (N, F)
    best = (D[None] * m[:, :, None] * m[:, None, :]).reshape(N, -1).argmax(1)
    a, b = best // F, best % F
    # normalised image coordinates of both views
    xa = (uv[a, np.arange(N)] - K[a, :2, 2]) / np.stack([K[a, 0, 0], K[a, 1, 1]], 1)
    xb = (uv[b, np.arange(N)] - K[b, :2, 2]) / np.stack([K[b, 0, 0], K[b, 1, 1]], 1)
    Pa, Pb = T[a, :3, :4], T[b, :3, :4]
    # DLT: rows x*P3 - P1, y*P3 - P2 for both views, smallest singular vector
    A = np.stack(
        [
            xa[:, 0:1] * Pa[:, 2] - Pa[:, 0],
            xa[:, 1:2] * Pa[:, 2] - Pa[:, 1],
            xb[:, 0:1] * Pb[:, 2] - Pb[:, 0],
            xb[:, 1:2] * Pb[:, 2] - Pb[:, 1],
        ],
        1,
    )
    _, _, Vt = np.linalg.svd(A)
    X = Vt[:, -1]
    return torch.from_numpy(X[:, :3] / X[:, 3:4])


@dataclass(frozen=True)
class ColmapBaseline:
    """Ceres BA through pycolmap (classical parameterisation).

    Attributes:
        linear_solver: Ceres linear solver name (DENSE_SCHUR is fastest here; see BA-NOTES).
        triangulate: ignore the initial points and triangulate them from the initial poses.
        max_iterations, function_tolerance, gradient_tolerance, parameter_tolerance: Ceres.
        num_threads: Ceres threads.
    """

    linear_solver: str = "DENSE_SCHUR"
    triangulate: bool = True
    max_iterations: int = 100
    function_tolerance: float = 1e-10
    gradient_tolerance: float = 1e-10
    parameter_tolerance: float = 1e-10
    num_threads: int = 2
    name = "ceres-colmap"

    def solve(self, problem: BAProblem, init: BAState) -> BAResult:
        pycolmap = _pycolmap()
        if problem.parameterization is not Parameterization.CLASSICAL:
            raise InputError("ColmapBaseline: only Parameterization.CLASSICAL is supported")
        t0 = time.perf_counter()
        problem.validate()
        if problem.extra_terms:
            raise InputError("ColmapBaseline: extra cost terms are supported by LMSolver only")
        w = problem.weight.detach().cpu().double().numpy()
        if not np.all((w == 0) | (w == 1)):
            raise InputError("ColmapBaseline: observation weights must be 0 or 1")
        if problem.fixed_frame != 0:
            raise InputError("ColmapBaseline: only fixed_frame=0 is supported")
        init = complete_state(problem, init)
        K = problem.K.detach().cpu().double().numpy()
        uv = problem.uv.detach().cpu().double().numpy()
        T = init.poses.detach().cpu().double().numpy()
        F, N = w.shape
        if self.triangulate:
            X = triangulate_tracks(problem, init.poses).numpy()
        else:
            X = init.points.detach().cpu().double().numpy()
        t_tri = time.perf_counter() - t0

        rec = pycolmap.Reconstruction()
        seen = w > 0
        width = int(max(2.0 * K[:, 0, 2].max() + 1, 1))
        height = int(max(2.0 * K[:, 1, 2].max() + 1, 1))
        for f in range(F):
            cam = pycolmap.Camera(
                model="PINHOLE",
                width=width,
                height=height,
                params=[K[f, 0, 0], K[f, 1, 1], K[f, 0, 2], K[f, 1, 2]],
                camera_id=f + 1,
            )
            rec.add_camera_with_trivial_rig(cam)
            idx = np.nonzero(seen[f])[0]
            img = pycolmap.Image(
                name=f"{f:05d}", keypoints=uv[f, idx], camera_id=f + 1, image_id=f + 1
            )
            rec.add_image_with_trivial_frame(img, pycolmap.Rigid3d(matrix=T[f, :3, :4]))
        point2d_idx = np.cumsum(seen, axis=1) - 1
        ids = []
        for j in range(N):
            track = pycolmap.Track()
            for f in np.nonzero(seen[:, j])[0]:
                track.add_element(int(f) + 1, int(point2d_idx[f, j]))
            ids.append(rec.add_point3D(X[j], track))

        opts = pycolmap.BundleAdjustmentOptions()
        opts.refine_focal_length = False
        opts.refine_principal_point = False
        opts.refine_extra_params = False
        opts.print_summary = False
        opts.ceres.auto_select_solver_type = False
        kern = problem.kernel
        if isinstance(kern, TrivialKernel):
            opts.ceres.loss_function_type = pycolmap.LossFunctionType.TRIVIAL
        elif isinstance(kern, HuberKernel):
            opts.ceres.loss_function_type = pycolmap.LossFunctionType.HUBER
            opts.ceres.loss_function_scale = kern.delta
        elif isinstance(kern, CauchyKernel):
            opts.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
            opts.ceres.loss_function_scale = kern.c
        else:
            raise InputError(f"ColmapBaseline: kernel {kern} has no Ceres equivalent")
        so = opts.ceres.solver_options
        so.linear_solver_type = getattr(pycolmap.pyceres.LinearSolverType, self.linear_solver)
        so.max_num_iterations = self.max_iterations
        so.function_tolerance = self.function_tolerance
        so.gradient_tolerance = self.gradient_tolerance
        so.parameter_tolerance = self.parameter_tolerance
        so.num_threads = self.num_threads
        cfg = pycolmap.BundleAdjustmentConfig()
        for f in range(F):
            cfg.add_image(f + 1)
        # camera 0 fixed (the default TWO_CAMS_FROM_WORLD gauge crawls on a yaw arc)
        cfg.fix_gauge(pycolmap.BundleAdjustmentGauge.UNSPECIFIED)
        cfg.set_constant_rig_from_world_pose(1)
        adjuster = pycolmap.create_default_bundle_adjuster(opts, cfg, rec)
        t_setup = time.perf_counter() - t0
        t1 = time.perf_counter()
        summary = adjuster.solve()
        t_solve = time.perf_counter() - t1
        cs = summary.ceres_summary

        poses = np.repeat(np.eye(4)[None], F, 0)
        for f in range(F):
            poses[f, :3, :4] = rec.image(f + 1).cam_from_world().matrix()
        pts = np.stack([rec.point3D(i).xyz for i in ids])
        dt, dev = problem.dtype, problem.device
        state = BAState(
            torch.as_tensor(poses, dtype=dt, device=dev), torch.as_tensor(pts, dtype=dt, device=dev)
        )
        lin = linearize(problem.replace(
            K=problem.K.detach(), uv=problem.uv.detach(), weight=problem.weight.detach()
        ), state, jacobians=False)
        rms = rms_px(lin)
        iters = int(cs.num_successful_steps + cs.num_unsuccessful_steps)
        return BAResult(
            state=state,
            cost=torch.tensor([cs.initial_cost, cs.final_cost], dtype=torch.float64),
            iterations=iters,
            converged=str(cs.termination_type).endswith("CONVERGENCE"),
            timings={"setup": t_setup, "triangulation": t_tri, "solve": t_solve},
            rms_px=rms,
            message=str(cs.message),
        )

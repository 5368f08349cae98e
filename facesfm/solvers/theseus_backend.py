"""Theseus backend (classical parameterisation): a TheseusLayer running Theseus' LM.

One cost object per observation (Theseus' model; ``vectorize=True`` batches same-type costs),
each with analytic Jacobians in Theseus' convention (SE3 perturbed on the right, tangent
(v, w)). Gauge: frame ``fixed_frame`` is an auxiliary (constant) variable; the classical scale
is fixed by a stiff prior holding the same translation coordinate that
:func:`gauge_free_mask` holds (zero at the optimum, so the optimum is unchanged).

Backward modes are Theseus' own (``th.BackwardMode``): IMPLICIT (Theseus differentiates one
damped Gauss-Newton step at the solution, which is exact only for zero-residual problems),
TRUNCATED (last k iterations) and UNROLL. Slow for large problems (see BA-NOTES): use it on small
ones. Needs ``theseus-ai==0.2.3`` (``pip install -e '.[theseus]'``; see the Makefile).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from facesfm.errors import InputError
from facesfm.solvers.lm import BackwardMode
from facesfm.solvers.problem import (
    BAProblem,
    BAResult,
    BAState,
    Parameterization,
    TrivialKernel,
    complete_state,
    gauge_free_mask,
)
from facesfm.solvers.residuals import linearize, rms_px

__all__ = ["LinearSolver", "TheseusBackend"]


def _theseus():
    try:
        import theseus as th
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise InputError(
            "the Theseus backend needs theseus-ai: see the Makefile (pip install "
            "--no-build-isolation 'theseus-ai==0.2.3', with scikit-sparse for CHOLMOD)"
        ) from e
    return th


class LinearSolver:
    DENSE = "dense"
    CHOLMOD = "cholmod"


def _make_cost_classes(th):
    class PinholeReprojection(th.CostFunction):
        """sqrt(w) (pi(K (R X + t)) - uv) for one observation; pose and/or point optimised."""

        def __init__(self, pose, point, uv, intr, sqrt_w, pose_fixed, name=None):
            super().__init__(th.ScaleCostWeight(sqrt_w), name=name)
            self.pose, self.point, self.uv, self.intr = pose, point, uv, intr
            self.pose_fixed = pose_fixed
            if pose_fixed:
                self.register_optim_vars(["point"])
                self.register_aux_vars(["pose", "uv", "intr"])
            else:
                self.register_optim_vars(["pose", "point"])
                self.register_aux_vars(["uv", "intr"])

        def _project(self, Xc):
            k = self.intr.tensor  # (B, 4): fx, fy, cx, cy
            z = Xc[:, 2:3]
            return torch.cat(
                [k[:, 0:1] * Xc[:, 0:1] / z + k[:, 2:3], k[:, 1:2] * Xc[:, 1:2] / z + k[:, 3:4]],
                1,
            )

        def error(self):
            Xc = self.pose.transform_from(self.point).tensor
            return self._project(Xc) - self.uv.tensor

        def jacobians(self):
            jac: list = []
            Xc = self.pose.transform_from(self.point, jacobians=jac).tensor
            k = self.intr.tensor
            z = Xc[:, 2]
            zero = torch.zeros_like(z)
            P = torch.stack(
                [
                    torch.stack([k[:, 0] / z, zero, -k[:, 0] * Xc[:, 0] / z**2], -1),
                    torch.stack([zero, k[:, 1] / z, -k[:, 1] * Xc[:, 1] / z**2], -1),
                ],
                -2,
            )
            err = self._project(Xc) - self.uv.tensor
            Jpose, Jpoint = P @ jac[0], P @ jac[1]
            return ([Jpoint] if self.pose_fixed else [Jpose, Jpoint]), err

        def dim(self):
            return 2

        def _copy_impl(self, new_name=None):
            return PinholeReprojection(
                self.pose.copy(), self.point.copy(), self.uv.copy(), self.intr.copy(),
                self.weight.scale.copy(), self.pose_fixed, name=new_name,
            )

    class TranslationGauge(th.CostFunction):
        """Stiff prior s * (t_k - t0_k) on one pose's translation coordinate (scale gauge)."""

        def __init__(self, pose, target, k, stiffness, name=None):
            super().__init__(th.ScaleCostWeight(stiffness), name=name)
            self.pose, self.target, self.k = pose, target, k
            self.register_optim_vars(["pose"])
            self.register_aux_vars(["target"])

        def error(self):
            return self.pose.tensor[:, self.k : self.k + 1, 3] - self.target.tensor

        def jacobians(self):
            # right perturbation: t(T exp(xi)) = t + R v
            R = self.pose.tensor[:, :, :3]
            J = torch.zeros(R.shape[0], 1, 6, dtype=R.dtype, device=R.device)
            J[:, 0, :3] = R[:, self.k, :]
            return [J], self.error()

        def dim(self):
            return 1

        def _copy_impl(self, new_name=None):
            return TranslationGauge(
                self.pose.copy(), self.target.copy(), self.k, self.weight.scale.copy(),
                name=new_name,
            )

    return PinholeReprojection, TranslationGauge


@dataclass(frozen=True)
class TheseusBackend:
    """Theseus LM in a TheseusLayer (classical parameterisation, trivial kernel).

    Attributes:
        linear_solver: :class:`LinearSolver` DENSE or CHOLMOD.
        backward: our :class:`BackwardMode` mapped to Theseus' (IMPLICIT, TRUNCATED, UNROLL;
            NONE solves without a graph).
        truncated_steps: Theseus ``backward_num_iterations`` for TRUNCATED.
        max_iterations, damping, abs_err_tolerance, rel_err_tolerance: Theseus LM.
    """

    linear_solver: str = LinearSolver.DENSE
    backward: BackwardMode = BackwardMode.IMPLICIT
    truncated_steps: int = 5
    max_iterations: int = 50
    damping: float = 1e-6
    abs_err_tolerance: float = 1e-12
    rel_err_tolerance: float = 1e-14
    gauge_stiffness: float = 1e3
    name = "theseus-lm"

    def solve(self, problem: BAProblem, init: BAState) -> BAResult:
        th = _theseus()
        if problem.parameterization is not Parameterization.CLASSICAL:
            raise InputError("TheseusBackend: only Parameterization.CLASSICAL is implemented")
        if not isinstance(problem.kernel, TrivialKernel):
            raise InputError("TheseusBackend: only the trivial kernel is implemented")
        t0 = time.perf_counter()
        problem.validate()
        if problem.extra_terms:
            raise InputError("TheseusBackend: extra cost terms are supported by LMSolver only")
        init = complete_state(problem, init)
        Reproj, Gauge = _make_cost_classes(th)
        F, N = problem.num_frames, problem.num_landmarks
        dt = problem.dtype
        f0 = problem.fixed_frame
        free = gauge_free_mask(problem, init)
        poses0 = init.poses.detach()
        poses = [th.SE3(tensor=poses0[f : f + 1, :3, :].clone(), name=f"pose{f}") for f in range(F)]
        points = [th.Point3(tensor=init.points.detach()[j : j + 1].clone(), name=f"pt{j}") for j in range(N)]
        K = problem.K
        intr = torch.stack([K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]], -1)
        intr_vars = [th.Variable(intr[f : f + 1].detach(), name=f"K{f}") for f in range(F)]
        seen = (problem.weight.detach() > 0).nonzero().tolist()
        obj = th.Objective(dtype=dt)
        inputs: dict[str, torch.Tensor] = {}
        uv = problem.uv
        sw = torch.sqrt(torch.where(problem.weight > 0, problem.weight, torch.ones_like(problem.weight)))
        for f, j in seen:
            uvar = th.Variable(uv[f, j][None].detach().clone(), name=f"uv{f}_{j}")
            wvar = th.Variable(sw[f, j].reshape(1, 1).detach().clone(), name=f"w{f}_{j}")
            obj.add(Reproj(poses[f], points[j], uvar, intr_vars[f], wvar, f == f0, name=f"r{f}_{j}"))
            inputs[f"uv{f}_{j}"] = uv[f, j][None]
            inputs[f"w{f}_{j}"] = sw[f, j].reshape(1, 1)
        if problem.parameterization is Parameterization.CLASSICAL:
            held = (~free).nonzero().tolist()
            for f, k in held:
                if f == f0:
                    continue
                target = th.Variable(poses0[f : f + 1, k, 3:4].clone(), name=f"gauge_t{f}_{k}")
                stiff = th.Variable(torch.tensor([[self.gauge_stiffness]], dtype=dt), name="gauge_s")
                obj.add(Gauge(poses[f], target, k, stiff, name=f"gauge{f}_{k}"))
        for f in range(F):
            inputs[f"pose{f}"] = init.poses[f : f + 1, :3, :]
            inputs[f"K{f}"] = intr[f : f + 1]
        for j in range(N):
            inputs[f"pt{j}"] = init.points[j : j + 1]
        solver_cls = th.CholeskyDenseSolver if self.linear_solver == LinearSolver.DENSE else th.CholmodSparseSolver
        opt = th.LevenbergMarquardt(
            obj,
            linear_solver_cls=solver_cls,
            vectorize=True,
            max_iterations=self.max_iterations,
            step_size=1.0,
            abs_err_tolerance=self.abs_err_tolerance,
            rel_err_tolerance=self.rel_err_tolerance,
        )
        layer = th.TheseusLayer(opt)
        t_setup = time.perf_counter() - t0
        kwargs = {"verbose": False, "damping": self.damping, "track_err_history": True}
        mode = self.backward
        if mode is BackwardMode.NONE:
            kwargs["backward_mode"] = "implicit"
            ctx = torch.no_grad()
        else:
            kwargs["backward_mode"] = {
                BackwardMode.IMPLICIT: "implicit",
                BackwardMode.IMPLICIT_GN: "implicit",
                BackwardMode.TRUNCATED: "truncated",
                BackwardMode.UNROLL: "unroll",
            }[mode]
            if mode is BackwardMode.TRUNCATED:
                kwargs["backward_num_iterations"] = self.truncated_steps
            ctx = torch.enable_grad()
        t1 = time.perf_counter()
        with ctx:
            values, info = layer.forward(inputs, optimizer_kwargs=kwargs)
        t_solve = time.perf_counter() - t1
        out_poses = torch.eye(4, dtype=dt, device=problem.device).repeat(F, 1, 1)
        rows = [values[f"pose{f}"] if f"pose{f}" in values else init.poses[f : f + 1, :3, :] for f in range(F)]
        out_poses = torch.cat([torch.cat(rows, 0), out_poses[:, 3:, :]], 1)
        pts = torch.cat([values[f"pt{j}"] for j in range(N)], 0)
        state = BAState(out_poses, pts)
        errs = info.err_history[0] if info.err_history is not None else None
        costs = []
        if errs is not None:
            costs = [0.5 * float(e) for e in errs if float(e) >= 0 and math.isfinite(float(e))]
        with torch.no_grad():
            lin = linearize(problem.replace(K=K.detach(), uv=uv.detach(),
                                            weight=problem.weight.detach()), state.detach(), jacobians=False)
            final = 0.5 * float((lin.r**2).sum())
            rms = rms_px(lin)
        status = str(info.status[0])
        conv_iter = int(info.converged_iter[0]) if info.converged_iter is not None else -1
        return BAResult(
            state=state,
            cost=torch.tensor(costs + [final], dtype=torch.float64),
            iterations=conv_iter if conv_iter >= 0 else self.max_iterations,
            converged="CONVERGED" in status,
            timings={"setup": t_setup, "solve": t_solve},
            rms_px=rms,
            message=status,
        )

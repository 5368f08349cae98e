"""PyPose backend on a small problem: reaches the reference optimum; its implicit gradient
(our IFT machinery at PyPose's optimum) matches finite differences."""

import pytest
import torch

from facesfm.geometry.se3 import rotation_angle
from facesfm.solvers import BackwardMode, LMSolver, ScipyReference, solve
from facesfm.solvers.synthetic import make_face_problem, perturb_state

pytest.importorskip("pypose", reason="pypose not installed (pip install pypose==0.9.5)")
from facesfm.solvers.pypose_backend import PyPoseBackend


def test_pypose_reaches_the_reference_optimum():
    sf = make_face_problem(5, 30, seed=0)
    init = perturb_state(sf.truth, seed=1)
    ref = solve(sf.problem, init, ScipyReference())
    res = solve(sf.problem, init, PyPoseBackend(backward=BackwardMode.NONE))
    assert res.converged
    assert abs(res.final_cost - ref.final_cost) <= 1e-6 * ref.final_cost
    ang = torch.rad2deg(rotation_angle(res.poses[:, :3, :3], ref.poses[:, :3, :3]))
    assert float(ang.max()) < 0.01
    assert float((res.poses[0] - init.poses[0]).abs().max()) == 0.0


def test_pypose_implicit_gradient_matches_finite_differences():
    sf = make_face_problem(5, 20, seed=0)
    p = sf.problem
    init = perturb_state(sf.truth, seed=1, rot_deg=1.0, trans_mm=3.0, point_mm=2.0)
    g = torch.Generator().manual_seed(5)
    A = torch.randn(5, 3, 3, generator=g, dtype=torch.float64)
    duv = torch.randn(p.uv.shape, generator=g, dtype=torch.float64) * (p.weight > 0)[..., None]
    tight = LMSolver(backward=BackwardMode.NONE, ftol=1e-16, xtol=1e-13, gtol=1e-13,
                     max_iterations=200)

    def loss(st):
        return (A * st.poses[:, :3, :3]).sum()

    h = 1e-3
    fd = (float(loss(tight.solve(p.replace(uv=p.uv + h * duv), init).state))
          - float(loss(tight.solve(p.replace(uv=p.uv - h * duv), init).state))) / (2 * h)
    uv = p.uv.clone().requires_grad_()
    res = PyPoseBackend().solve(p.replace(uv=uv), init)
    loss(res.state).backward()
    an = float((uv.grad * duv).sum())
    assert abs(fd) > 1e-3
    assert abs(an - fd) < 1e-3 * abs(fd), (an, fd)

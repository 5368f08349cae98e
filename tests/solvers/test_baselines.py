"""The COLMAP/Ceres baseline and triangulation reach the same optimum as ours."""

import pytest
import torch

from facesfm.errors import InputError
from facesfm.geometry.se3 import rotation_angle
from facesfm.solvers import BackwardMode, HuberKernel, LMSolver, Parameterization, solve
from facesfm.solvers.synthetic import make_face_problem, perturb_state

pytest.importorskip("pycolmap", reason="pycolmap not installed (pip install pycolmap==4.2.1)")
from facesfm.solvers.colmap_baseline import ColmapBaseline, triangulate_tracks


def test_triangulation_is_exact_without_noise():
    sf = make_face_problem(10, 40, seed=0, noise_px=0.0)
    X = triangulate_tracks(sf.problem, sf.truth.poses)
    assert float((X - sf.points).abs().max()) < 1e-7


@pytest.mark.parametrize("kernel", [None, HuberKernel(1.0)])
def test_ceres_reaches_our_optimum(kernel):
    kw = {} if kernel is None else {"kernel": kernel}
    sf = make_face_problem(12, 50, seed=3, **kw)
    init = perturb_state(sf.truth, seed=4)
    ceres = solve(sf.problem, init, ColmapBaseline())
    ours = solve(sf.problem, init, LMSolver(backward=BackwardMode.NONE))
    assert ceres.converged
    assert abs(ceres.cost[-1] - ours.final_cost) <= 1e-6 * ours.final_cost
    ang = torch.rad2deg(rotation_angle(ceres.poses[:, :3, :3], ours.poses[:, :3, :3]))
    assert float(ang.max()) < 0.01
    assert abs(ceres.rms_px - ours.rms_px) < 1e-4
    assert float((ceres.poses[0] - init.poses[0]).abs().max()) < 1e-12  # camera 0 held


def test_ceres_rejects_what_it_cannot_express():
    sf = make_face_problem(4, 15, seed=0, parameterization=Parameterization.DEPTH)
    with pytest.raises(InputError, match="CLASSICAL"):
        ColmapBaseline().solve(sf.problem, sf.truth)
    sfc = make_face_problem(4, 15, seed=0)
    with pytest.raises(InputError, match="0 or 1"):
        ColmapBaseline().solve(sfc.problem.replace(weight=sfc.problem.weight * 0.5), sfc.truth)

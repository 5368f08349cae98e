"""Shared fixtures: a CLI runner that expects a one-line refusal, one small rendered sequence (9 frames, 160x160, 200 landmarks, yaw -60..+60)
and two oracle solves of it, computed once per test session."""

import pytest


@pytest.fixture
def cli_error(capsys):
    """Run the CLI expecting a refusal: exit 2 and one ``error:`` line (warnings may precede
    it), no traceback; returns the line."""
    from facesfm.cli import main

    def run(argv):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in argv])
        err = capsys.readouterr().err
        lines = [ln for ln in err.strip().splitlines() if not ln.startswith("warning:")]
        assert e.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
        assert "Traceback" not in err and "RuntimeWarning" not in err
        return lines[0]

    return run


def _render9(folder, face_seed: int):
    """A 9-frame 160x160 built-in face sequence (f = 220 px, 500 mm away) in ``folder``."""
    from facesfm.faces.builtin import BuiltinFaceModel
    from facesfm.render.config import RenderConfig, TrajectoryConfig
    from facesfm.render.writer import render_sequence

    mesh, coeffs = BuiltinFaceModel().sample(face_seed)
    cfg = RenderConfig(width=160, height=160, focal=220.0, landmarks=200,
                       trajectory=TrajectoryConfig(frames=9))
    render_sequence(mesh, folder, cfg, seed=0,
                    face_info={"source": "builtin", "seed": face_seed, "coeffs": coeffs})
    return folder


@pytest.fixture(scope="session")
def seq9(tmp_path_factory):
    """Path of a 9-frame 160x160 built-in face sequence (f = 220 px, 500 mm away)."""
    return _render9(tmp_path_factory.mktemp("solve") / "seq9", 0)


@pytest.fixture(scope="session")
def other9(tmp_path_factory):
    """Another face (seed 7) rendered like seq9: same size, frame count and frame names."""
    return _render9(tmp_path_factory.mktemp("other") / "seq9", 7)


@pytest.fixture(scope="session")
def solved_gt(seq9, tmp_path_factory):
    """run_solve with oracle landmarks, GT depth and GT poses, BA off (pure fusion)."""
    from facesfm.solve.config import SolveConfig
    from facesfm.solve.pipeline import run_solve
    from facesfm.solvers.landmark_ba import BAConfig

    cfg = SolveConfig(oracle_landmarks=True, oracle_depth=True, poses_init="gt",
                      ba=BAConfig(enabled=False))
    out = tmp_path_factory.mktemp("solved") / "gt"
    return run_solve(seq9, out, cfg, echo=None)


@pytest.fixture(scope="session")
def solved_perturbed(seq9, tmp_path_factory):
    """run_solve from GT poses perturbed by 3 deg / 10 mm, with the BA layer."""
    from facesfm.solve.config import SolveConfig
    from facesfm.solve.pipeline import run_solve

    cfg = SolveConfig(oracle_landmarks=True, oracle_depth=True, poses_init="gt-perturbed",
                      perturb_rot_deg=3.0, perturb_trans_mm=10.0, perturb_seed=1)
    out = tmp_path_factory.mktemp("solved") / "perturbed"
    return run_solve(seq9, out, cfg, echo=None)


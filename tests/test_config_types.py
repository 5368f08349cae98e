"""Config values are type-checked where they are read: a string is no bool and no number."""

import pytest

from facesfm.cli import main
from facesfm.config import from_dict
from facesfm.errors import InputError
from facesfm.render.config import BatchConfig
from facesfm.solve.config import SolveConfig
from facesfm.training.config import TrainConfig


def test_from_dict_checks_types_and_names_the_key():
    with pytest.raises(InputError, match=r"cfg\.tracks\.enabled: expected bool, got 'false'"):
        from_dict(SolveConfig, {"tracks": {"enabled": "false"}}, "cfg")
    with pytest.raises(InputError, match=r"cfg\.subjects: expected int, got '3'"):
        from_dict(BatchConfig, {"subjects": "3"}, "cfg")
    with pytest.raises(InputError, match=r"cfg\.optim\.lr: expected float"):
        from_dict(TrainConfig, {"optim": {"lr": "1e-3"}}, "cfg")
    with pytest.raises(InputError, match=r"cfg\.subjects: expected int, got True"):
        from_dict(BatchConfig, {"subjects": True}, "cfg")
    with pytest.raises(InputError, match=r"face_extent_mm"):
        from_dict(SolveConfig, {"face_extent_mm": [40, "x"]}, "cfg")
    # what fits: an int where a float belongs, None where it is allowed, lists for tuples
    cfg = from_dict(SolveConfig, {"perturb_rot_deg": 3, "landmarks": None,
                                  "face_extent_mm": [30, 900.5]}, "cfg")
    assert cfg.perturb_rot_deg == 3 and cfg.face_extent_mm == (30, 900.5)


def test_enum_fields_read_and_write_their_values():
    from facesfm.config import to_dict
    from facesfm.solvers import BackwardMode, Parameterization
    from facesfm.solvers.landmark_ba import KernelKind

    cfg = from_dict(SolveConfig, {"ba": {"kernel": "cauchy", "parameterization": "depth"}})
    assert cfg.ba.kernel is KernelKind.CAUCHY and cfg.ba.parameterization is Parameterization.DEPTH
    d = to_dict(cfg)
    assert d["ba"]["kernel"] == "cauchy" and d["ba"]["backward"] == "none"
    assert from_dict(SolveConfig, d) == cfg
    with pytest.raises(InputError, match=r"cfg\.ba\.kernel: 'tukey' is not one of "
                                         r"\['huber', 'cauchy', 'none'\]"):
        from_dict(SolveConfig, {"ba": {"kernel": "tukey"}}, "cfg")
    with pytest.raises(InputError, match=r"ba\.backward"):
        from_dict(TrainConfig, {"sfm": {"ba": {"backward": 1}}})
    assert from_dict(TrainConfig, {"sfm": {"ba": {"backward": "unroll"}}}).sfm.ba.backward \
        is BackwardMode.UNROLL


def test_a_nested_mapping_fills_its_fields_own_default():
    """Training's BA layer defaults differ from the class's (the test-time solve's): a partial
    ``sfm.ba`` keeps training's for the keys it does not give."""
    from facesfm.solvers import Parameterization
    from facesfm.training.config import TRAINING_BA

    ba = from_dict(TrainConfig, {"sfm": {"ba": {"max_iterations": 5}}}).sfm.ba
    assert ba.max_iterations == 5 and ba.parameterization is Parameterization.DEPTH
    assert ba.pairs is TRAINING_BA.pairs and not ba.depth_corrections
    assert from_dict(SolveConfig, {"ba": {"max_iterations": 5}}).ba.parameterization \
        is Parameterization.CLASSICAL


def _one_line_error(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("warning:")]
    assert e.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_the_commands_refuse_mistyped_configs(tmp_path, capsys):
    bad = tmp_path / "solve.yaml"
    bad.write_text("tracks: {enabled: 'false'}\n")
    seq = tmp_path / "seq"
    seq.mkdir()  # never reached: the config is read first
    line = _one_line_error(["solve", seq, "--config", bad, "--out", tmp_path / "o"], capsys)
    assert "tracks.enabled" in line and "bool" in line
    assert not (tmp_path / "o").exists()

    bad = tmp_path / "render.yaml"
    bad.write_text("subjects: '3'\nrender: {width: 'wide'}\n")
    line = _one_line_error(["render", "--config", bad, "--out", tmp_path / "r"], capsys)
    assert "subjects" in line
    assert not (tmp_path / "r").exists()


def test_train_refuses_mistyped_and_out_of_range_values_before_making_the_run(
        tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for text, key in (("optim: {lr: abc}\n", "optim.lr"),
                      ("ckpt_every: 0\n", "ckpt_every")):
        cfg = tmp_path / "train.yaml"
        cfg.write_text(text)
        line = _one_line_error(["train", "landmarks", data, "--out", tmp_path / "run",
                                "--config", cfg], capsys)
        assert key in line
        assert not (tmp_path / "run").exists()

"""Named solve presets and dotted ``--set`` overrides: their order, their types, their errors."""

import json

import pytest

from facesfm.cli import main
from facesfm.config import dotted_overrides, to_dict
from facesfm.errors import InputError
from facesfm.solve.config import (
    SOLVE_PRESETS,
    SolveConfig,
    build_solve_config,
    with_settings,
)
from facesfm.training.config import build_train_config


def test_presets_set_what_they_say():
    fast, accurate = build_solve_config(preset="fast"), build_solve_config(preset="accurate")
    for cfg in (fast, accurate):
        assert cfg.poses_init == "landmarks" and cfg.depth == "landmarks"
    assert not fast.tracks.enabled and not fast.stereo.enabled
    assert accurate.tracks.enabled and accurate.stereo.enabled
    assert build_solve_config() == SolveConfig()  # no preset: the defaults
    with pytest.raises(InputError, match=r"--preset best: choose one of \['accurate', 'fast'\]"):
        build_solve_config(preset="best")
    assert sorted(SOLVE_PRESETS) == ["accurate", "fast"]


def test_defaults_then_preset_then_file_then_options_then_set(tmp_path):
    y = tmp_path / "solve.yaml"
    y.write_text("tracks: {enabled: false}\nba: {max_iterations: 7}\n")
    cfg = build_solve_config(str(y), "accurate")
    assert not cfg.tracks.enabled and cfg.stereo.enabled  # the file over the preset
    assert cfg.ba.max_iterations == 7 and cfg.poses_init == "landmarks"
    cfg = build_solve_config(str(y), "accurate", tracks=True)
    assert cfg.tracks.enabled  # an option over the file
    cfg = build_solve_config(str(y), "accurate", ("tracks.enabled=false", "ba.max_iterations=3",
                                                  "motion_check=off", "max_frames=null"),
                             tracks=True)
    assert not cfg.tracks.enabled and cfg.ba.max_iterations == 3  # --set last
    assert cfg.motion_check == "off" and cfg.max_frames is None  # (YAML would read off: False)


def test_set_values_are_typed_and_keys_checked():
    ref = to_dict(SolveConfig())
    assert dotted_overrides(["ba.ftol=1e-6", "face_extent_mm=[30, 900]"], ref) == {
        "ba": {"ftol": 1e-6}, "face_extent_mm": [30, 900]}
    with pytest.raises(InputError, match=r"--set ba\.nope=1: ba has no key 'nope'; allowed: "
                                         r"\[.*'max_iterations'"):
        dotted_overrides(["ba.nope=1"], ref)
    with pytest.raises(InputError, match=r"the config has no key 'tracking'"):
        dotted_overrides(["tracking.enabled=true"], ref)
    with pytest.raises(InputError, match=r"ba\.max_iterations has no key 'x'"):
        dotted_overrides(["ba.max_iterations.x=2"], ref)
    with pytest.raises(InputError, match=r"--set ba: expected KEY=VALUE"):
        dotted_overrides(["ba"], ref)
    # the type is checked where the config is built, naming the key
    with pytest.raises(InputError, match=r"ba\.max_iterations: expected int, got 'many'"):
        build_solve_config(sets=("ba.max_iterations=many",))
    with pytest.raises(InputError, match=r"tracks\.enabled: expected bool, got 2"):
        build_solve_config(sets=("tracks.enabled=2",))
    # training: an exponent is a float (YAML 1.1 reads 1e-4 as text)
    assert build_train_config("tiny", sets=("optim.lr=1e-4",)).optim.lr == 1e-4
    with pytest.raises(InputError, match=r"optim has no key 'learning_rate'"):
        build_train_config("tiny", sets=("optim.learning_rate=1",))


def test_solve_on_the_command_line_with_a_preset_and_set(seq9, tmp_path, capsys):
    out = tmp_path / "out"
    main(["solve", str(seq9), "--out", str(out), "--oracle-landmarks", "--preset", "fast",
          "--set", "ba.max_iterations=2", "--set", "fusion.voxel_mm=2.5", "--no-html"])
    rep = json.loads((out / "report.json").read_text())
    cfg = rep["config"]
    assert cfg["poses_init"] == "landmarks" and cfg["depth"] == "landmarks"
    assert cfg["ba"]["max_iterations"] == 2 and cfg["fusion"]["voxel_mm"] == 2.5
    assert rep["ba"]["iterations"] <= 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["solve", str(seq9), "--out", str(tmp_path / "o2"), "--set", "ba.iters=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert err[0].startswith("error: --set ba.iters=2: ba has no key 'iters'")
    assert not (tmp_path / "o2").exists()


def test_train_on_the_command_line_refuses_an_unknown_set(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(SystemExit) as e:
        main(["train", "landmarks", str(data), "--out", str(tmp_path / "run"), "--preset",
              "tiny", "--set", "optim.lr=fast"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "optim.lr: expected float" in err[0]
    assert not (tmp_path / "run").exists()


def test_a_flag_over_a_preset_takes_its_source_along(tmp_path):
    """A later layer that names one half of a linked pair (oracle_depth / depth,
    oracle_landmarks / landmarks_from) decides both: no disagreement with an earlier layer,
    no flag silently dropped."""
    y = tmp_path / "solve.yaml"
    y.write_text("oracle_depth: true\n")
    cfg = build_solve_config(str(y), "fast")  # the preset says depth: landmarks
    assert cfg.depth == "oracle" and cfg.oracle_depth
    cfg = build_solve_config(sets=("oracle_landmarks=true",))
    assert cfg.landmarks_from == "oracle" and cfg.oracle_landmarks
    cfg = build_solve_config(str(y), sets=("depth=landmarks",))
    assert cfg.depth == "landmarks" and not cfg.oracle_depth
    y.write_text("oracle_landmarks: true\n")
    assert build_solve_config(y).landmarks_from == "oracle"
    cfg = build_solve_config(y, sets=("landmarks_from=mediapipe",))
    assert cfg.landmarks_from == "mediapipe" and not cfg.oracle_landmarks


def test_settings_on_a_built_config_follow_the_set_rules():
    """A harness's config with ``--set`` items on top: typed, checked, and a linked pair's
    other half follows (``oracle_depth=true`` over a config whose depth is "landmarks" is
    oracle depth, not a disagreement)."""
    base = build_solve_config(preset="accurate")
    cfg = with_settings(base, ["tracks.kernel_px=0.5", "oracle_depth=true"])
    assert cfg.tracks.kernel_px == 0.5 and cfg.tracks.enabled
    assert cfg.depth == "oracle" and cfg.oracle_depth
    assert with_settings(base, []) == base
    with pytest.raises(InputError, match="tracks has no key 'kernel_mm'"):
        with_settings(base, ["tracks.kernel_mm=1"])

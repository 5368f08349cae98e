import json

import pytest

from facesfm.cli import main


def _run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr()


def test_missing_data_folder_is_one_line(tmp_path, capsys):
    code, cap = _run(
        [
            "train",
            "landmarks",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "o"),
            "--preset",
            "tiny",
        ],
        capsys,
    )
    assert code == 2
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and "nope" in lines[0] and lines[0].startswith("error:")


def test_unknown_preset_is_one_line(tiny_data, tmp_path, capsys):
    code, cap = _run(
        ["train", "sfm", str(tiny_data), "--out", str(tmp_path / "o"), "--preset", "huge"], capsys
    )
    assert code == 2
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and "'huge'" in lines[0] and "tiny" in lines[0]


def test_bad_ablation_and_missing_checkpoint_are_one_line(tiny_data, tmp_path, capsys):
    code, cap = _run(
        [
            "train",
            "sfm",
            str(tiny_data),
            "--out",
            str(tmp_path / "o"),
            "--preset",
            "tiny",
            "--ablation",
            "bogus",
        ],
        capsys,
    )
    assert code == 2 and len(cap.err.strip().splitlines()) == 1 and "bogus" in cap.err
    code, cap = _run(
        [
            "train",
            "sfm",
            str(tiny_data),
            "--out",
            str(tmp_path / "o"),
            "--preset",
            "tiny",
            "--landmarks-ckpt",
            str(tmp_path / "x.pt"),
        ],
        capsys,
    )
    assert code == 2 and len(cap.err.strip().splitlines()) == 1 and "x.pt" in cap.err


def test_both_stages_from_the_cli(tiny_data, tmp_path, capsys):
    lm = tmp_path / "lm"
    main(
        [
            "train",
            "landmarks",
            str(tiny_data),
            "--out",
            str(lm),
            "--preset",
            "tiny",
            "--max-steps",
            "2",
            "--quiet",
        ]
    )
    ck = lm / "checkpoints" / "last.pt"
    assert ck.is_file()
    sfm = tmp_path / "sfm"
    main(
        [
            "train",
            "sfm",
            str(tiny_data),
            "--out",
            str(sfm),
            "--preset",
            "tiny",
            "--landmarks-ckpt",
            str(ck),
            "--max-steps",
            "1",
            "--landmarks",
            "68",
            "--quiet",
        ]
    )
    s = json.loads((sfm / "summary.json").read_text())
    assert s["stage"] == "sfm" and s["steps"] == 1
    assert "ba_rms_px" in s["train"] and "depth_abs_rel" in s["val"]
    from facesfm.training.checkpoint import load_checkpoint

    sck = load_checkpoint(sfm / "checkpoints" / "last.pt", stage="sfm")
    assert sck["extra"]["landmarks_ckpt"] == str(ck)
    assert set(sck["rng"]) == {"torch", "numpy", "python"}
    out = capsys.readouterr().out
    assert "trained sfm: 1 step(s)" in out
    # a 68-landmark detector serves N = 20 (the first 20 of the nested ordering) ...
    main(
        [
            "train",
            "sfm",
            str(tiny_data),
            "--out",
            str(tmp_path / "s20"),
            "--preset",
            "tiny",
            "--landmarks-ckpt",
            str(ck),
            "--landmarks",
            "20",
            "--ablation",
            "landmark",
            "--max-steps",
            "1",
            "--quiet",
        ]
    )
    s20 = json.loads((tmp_path / "s20" / "summary.json").read_text())
    assert s20["steps"] == 1 and "spectral" not in s20["train"]
    # ... but the data cannot ask for more landmarks than they store
    code, cap = _run(
        [
            "train",
            "sfm",
            str(tiny_data),
            "--out",
            str(tmp_path / "s2"),
            "--preset",
            "tiny",
            "--landmarks-ckpt",
            str(ck),
            "--landmarks",
            "100",
        ],
        capsys,
    )
    assert code == 2 and "68" in cap.err and len(cap.err.strip().splitlines()) == 1


def test_resume_without_a_checkpoint_says_so(tiny_data, tmp_path, capsys):
    main(["train", "landmarks", str(tiny_data), "--out", str(tmp_path / "run"), "--preset",
          "tiny", "--max-steps", "1", "--resume", "--quiet"])
    cap = capsys.readouterr()
    said = cap.out + cap.err
    assert "--resume: no checkpoint at" in said and "starting a new run" in said
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_training_on_a_render_without_its_index_says_so(tiny_data, tmp_path, capsys):
    """An interrupted render leaves its finished sequences but no dataset.json (written last):
    training on such a folder warns."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "dataset.json").unlink()
    main(["train", "landmarks", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny",
          "--max-steps", "1", "--quiet"])
    cap = capsys.readouterr()
    assert "has no dataset.json" in cap.out + cap.err
    main(["train", "landmarks", str(tiny_data), "--out", str(tmp_path / "run2"), "--preset",
          "tiny", "--max-steps", "1", "--quiet"])
    cap = capsys.readouterr()
    assert "dataset.json" not in cap.out + cap.err

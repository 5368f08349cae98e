"""Ground truth given to compare and eval must be of the frames the solve ran on: every render
names its frames 000000.png ..., so names alone cannot tell two faces apart."""

import shutil

from facesfm.cli import main

ORACLE = ["--oracle-landmarks", "--oracle-depth", "--oracle-poses", "--no-html"]


def test_compare_and_eval_refuse_another_faces_ground_truth(seq9, other9, tmp_path, capsys,
                                                           cli_error):
    seq = tmp_path / "seq9"
    shutil.copytree(seq9, seq)
    solved = tmp_path / "solved"
    main([str(a) for a in ["solve", seq, *ORACLE, "--out", solved]])
    capsys.readouterr()
    # the right ground truth is accepted
    main(["compare", str(solved), "--gt", str(seq)])
    assert "rotation" in capsys.readouterr().out
    main(["eval", str(seq), "--solve-dir", str(solved), "--methods", "", "--out",
          str(tmp_path / "ev_ok"), "--quiet"])
    capsys.readouterr()
    # another face's sequence: same names, other frames
    line = cli_error(["compare", solved, "--gt", other9])
    assert "not the ones" in line and str(other9) in line
    line = cli_error(["eval", other9, "--solve-dir", solved, "--methods", "", "--out",
                   tmp_path / "ev", "--quiet"])
    assert "not among the sequences given" in line and str(seq) in line
    assert not (tmp_path / "ev").exists()
    # the solved folder's frames replaced by another face's: its path matches, its frames not
    shutil.rmtree(seq)
    shutil.copytree(other9, seq)
    line = cli_error(["eval", seq, "--solve-dir", solved, "--methods", "", "--out",
                   tmp_path / "ev2", "--quiet"])
    assert "not the ones" in line

import csv
import io

import numpy as np
import pytest
from PIL import Image

from facesfm.eval.tables import (
    PAPER_COLUMN,
    PAPER_TABLE1,
    Table,
    comparison_table,
    landmark_sweep_table,
    plot_landmark_sweep,
    plot_pose_errors,
    write_table,
)


def test_markdown_and_csv_contents(tmp_path):
    t = Table(
        ("method", "mean (mm)", "frames"),
        (("a|b", 1.23456, 3), ("c", float("nan"), None)),
        title="T",
        notes=("a note",),
    )
    md, cs = write_table(t, tmp_path / "t.md", tmp_path / "t.csv", precision=3)
    text = md.read_text()
    assert text.splitlines() == [
        "### T",
        "",
        "| method | mean (mm) | frames |",
        "|---|---:|---:|",
        "| a\\|b | 1.235 | 3 |",
        "| c | n/a | n/a |",
        "",
        "*a note*",
    ]
    rows = list(csv.reader(io.StringIO(cs.read_text())))
    assert rows == [["method", "mean (mm)", "frames"], ["a|b", "1.23456", "3"], ["c", "", ""]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.md"]  # no temp files left


def test_failed_write_leaves_old_file(tmp_path):
    p = tmp_path / "t.md"
    p.write_text("old")

    class Bad(Table):
        def to_markdown(self, precision=2):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_table(Bad(("a",), ((1,),)), md_path=p)
    assert p.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_row_length_checked():
    with pytest.raises(ValueError, match="row 0"):
        Table(("a", "b"), ((1,),))


def test_from_records():
    t = Table.from_records([{"n": 68, "err": 2.5}, {"n": 200, "extra": "x"}])
    assert t.columns == ("n", "err", "extra")
    assert t.rows == ((68, 2.5, None), (200, None, "x"))


def test_landmark_sweep_table_quotes_paper_in_its_own_column():
    t = landmark_sweep_table({68: 3.5, 800: 1.25}, dataset="Facescape")
    assert t.columns[2] == f"{PAPER_COLUMN}: Facescape"
    assert [r[0] for r in t.rows] == [68, 200, 300, 400, 500, 568, 800]
    assert t.rows[0] == (68, 3.5, 19.72)
    assert t.rows[-1] == (800, 1.25, None)
    assert t.rows[5] == (568, None, PAPER_TABLE1["Facescape"][568])
    md = t.to_markdown()
    assert "| 800 | 1.25 | n/a |" in md and "not measured on our data" in md
    with pytest.raises(ValueError, match="dataset"):
        landmark_sweep_table({}, dataset="ours")


def test_comparison_table():
    t = comparison_table({"facesfm (568)": 2.0, "factorisation [14]": 6.5, "3DDFA": None})
    d = {r[0]: r[1:] for r in t.rows}
    assert d["facesfm (568)"] == (2.0, None)
    assert d["3DDFA"] == (None, 8.82)
    assert d["Ours (paper)"] == (None, 4.26)
    assert t.rows[0][0] == "facesfm (568)"  # ours first, in the order given


def test_plots_write_pngs(tmp_path):
    p = plot_landmark_sweep({68: 3.0, 200: 2.0, 568: 1.0}, tmp_path / "sweep.png")
    q = plot_pose_errors(
        {"ours": np.linspace(0, 1, 10), "factorisation": np.ones(10)}, tmp_path / "pose.png"
    )
    for path in (p, q):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == (640, 360)
            assert np.asarray(im.convert("L")).std() > 5  # something was drawn
    with pytest.raises(ValueError, match="1-D"):
        plot_pose_errors({"x": np.zeros((2, 2))}, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()

"""Every command fed damaged inputs of its kinds (truncated, random bytes, NaN, wrong types):
a one-line error or a clean run, never a traceback, never a partial output."""

import json
import shutil

import numpy as np
import pytest

from facesfm.cli import main

RNG = np.random.default_rng(1234)


def _truncate(p):
    p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 3)])


def _random_bytes(p):
    p.write_bytes(RNG.integers(0, 256, 300, dtype=np.uint8).tobytes())


def _json_edit(fn):
    def edit(seq):
        p = seq / "sequence.json"
        meta = json.loads(p.read_text())
        fn(meta)
        p.write_text(json.dumps(meta))
    return edit


def _npz_edit(key, value):
    def edit(seq):
        z = dict(np.load(seq / "landmarks.npz"))
        z[key] = value(z[key])
        np.savez_compressed(seq / "landmarks.npz", **z)
    return edit


def _nan_depth(seq):
    p = sorted((seq / "depth").iterdir())[2]
    d = np.load(p)
    d[d > 0] = np.nan
    np.save(p, d)


CORRUPTIONS = {
    "sequence.json truncated": lambda s: _truncate(s / "sequence.json"),
    "sequence.json random bytes": lambda s: _random_bytes(s / "sequence.json"),
    "K a string": _json_edit(lambda m: m.update(K="abc")),
    "width a string": _json_edit(lambda m: m.update(width="wide")),
    "frames a number": _json_edit(lambda m: m.update(frames=3)),
    "a pose with NaN": _json_edit(lambda m: m["frames"][1].update(
        cam_T_world=[[float("nan")] * 4] * 4)),
    "landmarks.npz truncated": lambda s: _truncate(s / "landmarks.npz"),
    "landmarks.npz random bytes": lambda s: _random_bytes(s / "landmarks.npz"),
    "landmark xyz NaN": _npz_edit("xyz", lambda a: np.full_like(a, np.nan)),
    "landmark uv of the wrong shape": _npz_edit("uv", lambda a: a[:, :3]),
    "a frame image truncated": lambda s: _truncate(sorted((s / "rgb").iterdir())[3]),
    "a frame image random bytes": lambda s: _random_bytes(sorted((s / "rgb").iterdir())[3]),
    "a depth map random bytes": lambda s: _random_bytes(sorted((s / "depth").iterdir())[2]),
    "a depth map NaN": _nan_depth,
    "a mask random bytes": lambda s: _random_bytes(sorted((s / "mask").iterdir())[2]),
}

COMMANDS = {
    "solve": lambda seq, out: ["solve", seq, "--oracle-landmarks", "--oracle-depth",
                               "--oracle-poses", "--no-html", "--out", out],
    "eval": lambda seq, out: ["eval", seq, "--out", out, "--quiet"],
    "train": lambda seq, out: ["train", "landmarks", seq, "--out", out, "--preset", "tiny",
                               "--max-steps", "1", "--quiet"],
}


def _check(argv, out, capsys):
    """Run ``argv``: it either succeeds or exits non-zero with one error line; no traceback,
    and without success no output and no temporary left beside it."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code != 0:
        lines = [ln for ln in err.strip().splitlines()
                 if not ln.startswith(("warning:", "W0000", "I0000"))]
        assert code in (1, 2) and len(lines) == 1 and lines[0].startswith("error: "), err
        assert not out.exists() or argv[0] == "train"  # a run folder may hold its log
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    return code


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_damaged_sequences(seq9, tmp_path, capsys, corruption):
    seq = tmp_path / "seq"
    shutil.copytree(seq9, seq)
    CORRUPTIONS[corruption](seq)
    codes = {name: _check(cmd(seq, tmp_path / f"out_{name}"), tmp_path / f"out_{name}", capsys)
             for name, cmd in COMMANDS.items()}
    # damage the commands read must be reported by at least one of them
    assert any(c != 0 for c in codes.values()), codes


def test_damaged_camera_files_and_configs(seq9, tmp_path, capsys):
    main([str(a) for a in ["solve", seq9, "--oracle-landmarks", "--oracle-depth",
                           "--oracle-poses", "--no-html", "--out", tmp_path / "s"]])
    capsys.readouterr()
    cams = tmp_path / "s" / "cameras.json"
    good = cams.read_text()
    for damage in (lambda: _truncate(cams), lambda: _random_bytes(cams),
                   lambda: cams.write_text(good.replace('"K"', '"K_"')),
                   lambda: cams.write_text(good.replace("cam_T_world_optimised", "x"))):
        cams.write_text(good)
        damage()
        assert _check(["compare", cams], tmp_path / "cmp", capsys) == 2
    cfg = tmp_path / "c.yaml"
    for text in ("{{{", "ba: [1, 2]", "tracks: 3", "\x00\x01\x02"):
        cfg.write_text(text)
        assert _check(["solve", seq9, "--config", cfg, "--out", tmp_path / "o"],
                      tmp_path / "o", capsys) == 2
        assert _check(["render", "--config", cfg, "--out", tmp_path / "r"], tmp_path / "r",
                      capsys) == 2

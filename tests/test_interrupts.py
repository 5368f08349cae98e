"""Interrupted runs leave nothing half-written: SIGTERM unwinds like Ctrl-C, and what a killed
run left is removed by the next one."""

import os
import signal
import subprocess
import sys
import time

from facesfm.io import atomic_dir, atomic_path, remove_stale


def _dead_pid() -> int:
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                       capture_output=True, text=True, check=True)
    return int(p.stdout)


def test_sigterm_during_render_leaves_no_partial_sequence(tmp_path):
    out = tmp_path / "data"
    env = {**os.environ, "PYOPENGL_PLATFORM": "osmesa"}
    proc = subprocess.Popen(
        # 20 sequences: far more work than the test waits for, so the signal lands mid-render
        # however fast or loaded the machine is
        [sys.executable, "-m", "facesfm.cli", "render", "--out", str(out), "--subjects", "20",
         "--frames", "61", "--size", "256", "--quiet"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        t0 = time.monotonic()
        while not (out.is_dir() and any(".partial-" in p.name for p in out.iterdir())):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - t0 < 120, "no sequence was started"
            time.sleep(0.05)
        time.sleep(0.3)  # inside the first sequence's frames
        assert proc.poll() is None, "the render ended before it could be interrupted"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "terminated" in err and "Traceback" not in err
    left = [p.name for p in out.iterdir()] if out.exists() else []
    assert not [n for n in left if n.startswith(".")], left
    assert "dataset.json" not in left  # it was stopped, not finished


def test_what_a_killed_writer_left_is_removed_by_the_next(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    target = tmp_path / "seq"
    stale = [tmp_path / f".seq.partial-{dead}-abc123", tmp_path / f".seq.old-{dead}"]
    for p in stale:
        p.mkdir()
        (p / "x.png").write_bytes(b"half")
    stale_file = tmp_path / f".seq.tmp-{dead}-k2j3.json"
    stale_file.write_text("{")
    theirs = tmp_path / f".seq.partial-{alive}-zzz"  # a writer that still runs: kept
    theirs.mkdir()
    other = tmp_path / ".seq.partial-notapid"  # not our naming: kept
    other.mkdir()
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("done")
    assert (target / "a.txt").read_text() == "done"
    assert not any(p.exists() for p in [*stale, stale_file])
    assert theirs.exists() and other.exists()
    # atomic_path does the same for files (a checkpoint killed mid-save)
    ck = tmp_path / "last.pt"
    zero = tmp_path / f".last.pt.tmp-{dead}-q1w2.pt"
    zero.write_bytes(b"")
    with atomic_path(ck) as tmp:
        tmp.write_bytes(b"weights")
    assert ck.read_bytes() == b"weights" and not zero.exists()
    assert remove_stale(ck) == []

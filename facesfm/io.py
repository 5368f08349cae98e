"""Atomic file writes: write beside the target, then rename, so nothing is half-written; and
reading the JSON files they write back, with a one-line error for a damaged one."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from facesfm.errors import InputError

# mkstemp/mkdtemp create private (0600/0700) entries; what we publish gets the usual
# permissions under the process umask instead (read once: os.umask can only be read by setting).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale(path: Path) -> list[Path]:
    """Remove the temporaries that a killed writer of ``path`` left beside it: our own names
    (``.<name>.tmp-<pid>-*``, ``.<name>.partial-<pid>-*``, ``.<name>.old-<pid>``) whose
    process no longer runs. Returns what was removed."""
    pat = re.compile(rf"^\.{re.escape(path.name)}\.(?:tmp|partial|old)-(\d+)(?:-.*)?$")
    gone = []
    if not path.parent.is_dir():
        return gone
    for p in path.parent.iterdir():
        m = pat.match(p.name)
        if m is None or int(m.group(1)) == os.getpid() or _alive(int(m.group(1))):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        gone.append(p)
    return gone


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    The temporary name keeps the target's suffix so that writers choosing a format from the
    extension (PIL, trimesh, numpy) behave the same, and carries the process id, so that the
    next writer of ``path`` removes what a killed one left (:func:`remove_stale`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-",
        suffix=suffix or "".join(path.suffixes)
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: str | os.PathLike) -> None:
    """InputError unless ``path`` could be created: its nearest existing ancestor is a folder
    that accepts a new entry (tried with a temporary file, removed at once). For commands
    that work long before they write: they fail at the start, and leave nothing."""
    path = Path(path).absolute()
    anc = path.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise InputError(f"cannot write {path}: {anc} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=anc, prefix=f".{path.name}.tmp-{os.getpid()}-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}") from None


def write_json(path, obj, indent: int = 2) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, default=_json_default) + "\n")


def read_json(path):
    """The JSON value in the file ``path``; InputError naming the file when it is not valid
    JSON (or not text)."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None


def write_npy(path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def write_npz(path, **arrays) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


@contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False):
    """Build a folder under a temporary name and rename it into place when complete.

    An existing ``path`` is an error unless ``overwrite``; then it is replaced only after
    the new folder is complete. What a killed writer of ``path`` left is removed first
    (:func:`remove_stale`).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"output path is a file, not a folder: {path}")
    if path.exists() and not overwrite:
        raise InputError(f"output folder exists: {path} (pass --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.partial-{os.getpid()}-"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o)}")

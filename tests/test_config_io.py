import dataclasses
import json

import pytest

from facesfm.config import dump_yaml, from_dict, load_yaml, to_dict
from facesfm.errors import InputError
from facesfm.io import atomic_dir, atomic_path, write_json


@dataclasses.dataclass(frozen=True)
class Inner:
    a: int = 1
    b: tuple[float, ...] = (1.0, 2.0)


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str = "x"
    inner: Inner = Inner()


def test_from_dict_rejects_unknown_keys_naming_them():
    with pytest.raises(InputError, match="unknown key.*'typo'"):
        from_dict(Outer, {"typo": 3})
    with pytest.raises(InputError, match=r"config.inner: unknown key.*'c'"):
        from_dict(Outer, {"inner": {"c": 1}})


def test_yaml_roundtrip(tmp_path):
    cfg = Outer(name="y", inner=Inner(a=5, b=(3.0,)))
    dump_yaml(cfg, tmp_path / "c.yaml")
    assert load_yaml(Outer, tmp_path / "c.yaml") == cfg
    assert to_dict(cfg) == {"name": "y", "inner": {"a": 5, "b": [3.0]}}


def test_load_yaml_missing_file_names_it(tmp_path):
    with pytest.raises(InputError, match="nope.yaml"):
        load_yaml(Outer, tmp_path / "nope.yaml")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    write_json(target, {"k": 1})
    assert json.loads(target.read_text()) == {"k": 1}


def test_atomic_dir_refuses_existing_and_replaces_only_when_complete(tmp_path):
    out = tmp_path / "seq"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(InputError, match="exists"), atomic_dir(out):
        pass
    with pytest.raises(RuntimeError), atomic_dir(out, overwrite=True) as d:
        (d / "new.txt").write_text("new")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]
    assert (out / "old.txt").exists()
    with atomic_dir(out, overwrite=True) as d:
        (d / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]


def test_published_files_and_folders_are_not_private(tmp_path):
    import os
    import stat

    write_json(tmp_path / "a.json", {})
    with atomic_dir(tmp_path / "d") as d:
        (d / "x").write_text("x")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~umask

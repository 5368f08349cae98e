"""The package's layers import one way: each floor uses only the floors below it.

Read from the source (ast), so that an import inside a function counts as much as one at
the top of a module; only imports under ``if TYPE_CHECKING:`` are left out (they run never).
"""

import ast
from collections import defaultdict
from pathlib import Path

import facesfm

ROOT = Path(facesfm.__file__).parent

# Lowest first. A floor is a subpackage or a top-level module of facesfm; it may import its
# own floor's modules and any floor below it, never one above.
FLOORS = [
    "errors", "paths", "io", "optional", "stats", "config", "weights",  # plain helpers
    "geometry",  # cameras, SE(3), similarity, multi-view geometry on arrays
    "faces",  # morphable models and meshes
    "solvers",  # the BA problem and its solvers, initial poses, classical baselines
    "networks",
    "data",  # the sequence format on disk, datasets, camera files
    "losses",
    "render",
    "training",  # incl. loading trained networks for inference
    "eval",  # alignment, metrics, a result's accuracy against ground truth
    "solve",  # the test-time pipeline
    "demo",
    "cli",
    "__init__",
]


def _floor(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking_nodes(tree) -> set:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for b in node.body for n in ast.walk(b))
    return skip


def _imports():
    """[(module, imported facesfm module, line, at module level)] over the whole package."""
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        mod = _module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_nodes(tree)
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
                if node.module == "facesfm":  # `from facesfm import geometry`
                    targets = [f"facesfm.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                if t == "facesfm" or t.startswith("facesfm."):
                    out.append((mod, t, f"{path.relative_to(ROOT.parent)}:{node.lineno}",
                                id(node) in top))
    return out


def test_every_floor_is_listed():
    floors = {_floor(_module_name(p)) for p in ROOT.rglob("*.py")}
    assert floors <= set(FLOORS), f"add {sorted(floors - set(FLOORS))} to FLOORS"


def test_no_import_runs_up_a_floor():
    rank = {f: i for i, f in enumerate(FLOORS)}
    up = [f"{where}: {mod} imports {tgt}" for mod, tgt, where, _ in _imports()
          if rank[_floor(tgt)] > rank[_floor(mod)]]
    assert not up, "imports up the layers:\n" + "\n".join(up)


def _cycles(edges: dict) -> list:
    """The strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, comps = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return comps


def test_no_circular_imports_between_modules():
    """Between modules, counting imports inside functions too; a package's __init__ that
    gathers its own modules' names is the one edge left out (it runs after them)."""
    edges = defaultdict(set)
    modules = {_module_name(p) for p in ROOT.rglob("*.py")}
    for mod, tgt, _, _ in _imports():
        # `from facesfm.x.y import name` depends on module x.y (or on package x.y)
        while tgt not in modules and "." in tgt:
            tgt = tgt.rsplit(".", 1)[0]
        is_init = (ROOT.parent / Path(*mod.split("."))).is_dir()
        if is_init and tgt.startswith(mod + "."):
            continue
        if tgt != mod:
            edges[mod].add(tgt)
    cycles = _cycles(edges)
    assert not cycles, "circular imports: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_checks_see_a_violation(tmp_path, monkeypatch):
    """The walk finds an upward import and a cycle when there is one (it can fail)."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    found = {(m, t) for m, t, _, _ in _imports()}
    assert ("facesfm.cli", "facesfm.solve.config") in found or any(
        m == "facesfm.cli" and t.startswith("facesfm.solve") for m, t in found)

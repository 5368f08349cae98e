"""The README is an entry point (at most ~200 lines) and every relative link in it and in
docs/ leads to a file that exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _links(md: Path):
    for target in LINK.findall(md.read_text()):
        if re.match(r"^(https?:|mailto:|#)", target):
            continue
        yield target.split("#", 1)[0]


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= 200, f"README.md has {n} lines; details belong in docs/"


def test_every_relative_link_resolves():
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = [f"{md.relative_to(ROOT)} -> {t}" for md in files for t in _links(md)
              if not (md.parent / t).exists()]
    assert not broken, "broken links:\n" + "\n".join(broken)
    assert sum(1 for md in files for _ in _links(md)) > 20  # the check saw the links

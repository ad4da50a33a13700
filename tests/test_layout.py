"""The README's annotated layout tree is kept true: every path it names exists, every module is named."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_tree() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Layout\n.*?```text\n(.*?)```", text, re.S)
    assert block, "README has no '## Layout' section with a ```text block"
    paths, stack = [], []
    for line in block.group(1).splitlines():
        if not line.strip():
            continue
        name = line.split("#")[0].rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        stack = [*stack[:depth], name.strip()]
        paths.append("".join(stack))
    return paths


def test_every_listed_path_exists():
    missing = [p for p in readme_tree() if not (REPO / p).exists()]
    assert not missing, f"README layout names paths that do not exist: {missing}"


def test_every_module_and_top_level_entry_is_listed():
    listed = set(readme_tree())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "birdsed").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules - listed == set(), f"modules missing from the README layout: {sorted(modules - listed)}"
    for top in ("birdsed/", "configs/", "tests/", "benchmarks/", "notebooks/", "submissions/", "Makefile", ".ci/"):
        assert top in listed, top

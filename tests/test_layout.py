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
    for top in ("birdsed/", "configs/", "tests/", "benchmarks/", "submissions/", "Makefile", ".ci/"):
        assert top in listed, top


def _imports(path: Path) -> set[str]:
    """The birdsed modules a file imports anywhere (function-level imports too), except under ``if TYPE_CHECKING:``
    (never executed)."""
    import ast

    tree = ast.parse(path.read_text())
    skip = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("birdsed"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from birdsed import x` may be a module
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("birdsed"))
    return found


def test_no_import_cycles_between_modules():
    """Modules import in pipeline order: no module reaches itself through the imports it executes."""
    files = {p: ".".join(p.relative_to(REPO).with_suffix("").parts) for p in (REPO / "birdsed").rglob("*.py")}
    names = {m.removesuffix(".__init__") for m in files.values()}
    graph = {m.removesuffix(".__init__"): {i for i in _imports(p) if i in names} for p, m in files.items()}
    graph = {m: deps - {m, "birdsed"} for m, deps in graph.items()}  # the package's __init__ holds only a version

    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for dep in graph.get(node, ()):
                if dep == start:
                    return [*path, start]
                if dep not in seen:
                    seen.add(dep)
                    stack.append((dep, [*path, dep]))
        return None

    cycles = [c for m in sorted(graph) if (c := cycle_from(m))]
    assert not cycles, f"import cycles: {cycles[:3]}"

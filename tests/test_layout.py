"""The annotated layout tree (docs/layout.md) is kept true: every path it names exists, every module is named."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_tree() -> list[str]:
    text = (REPO / "docs" / "layout.md").read_text()
    block = re.search(r"^#+ Layout\n.*?```text\n(.*?)```", text, re.S | re.M)
    assert block, "docs/layout.md has no '# Layout' heading with a ```text block"
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
    assert not missing, f"docs/layout.md names paths that do not exist: {missing}"


def test_every_module_and_top_level_entry_is_listed():
    listed = set(readme_tree())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "birdsed").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules - listed == set(), f"modules missing from docs/layout.md: {sorted(modules - listed)}"
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


# The house's floors, low to high: a module may import its own package, the base and lower floors, never a higher one.
# The base (config, errors, rules, outputs) is floor 0; cli/commands sit on the roof.
FLOORS = {
    "birdsed.errors": 0,
    "birdsed.rules": 0,
    "birdsed.config": 0,
    "birdsed.outputs": 0,
    "birdsed.ownership": 0,
    "birdsed.scoring": 1,
    "birdsed.data": 2,
    "birdsed.models": 3,
    "birdsed.teacher": 4,
    "birdsed.training": 5,
    "birdsed.inference": 6,
    "birdsed.pseudo": 7,
    "birdsed.study": 8,
    "birdsed.reports": 9,
    "birdsed.kaggle": 10,
    "birdsed.commands": 11,
    "birdsed.cli": 12,
    "birdsed.__main__": 13,
}


def _floor(module: str) -> tuple[str, int]:
    parts = module.split(".")
    for n in (2, 1):
        key = ".".join(parts[:n])
        if key in FLOORS:
            return key, FLOORS[key]
    raise AssertionError(f"{module}: on no floor of the house; add its package to FLOORS in tests/test_layout.py")


def test_imports_point_down_the_floors():
    """Each stage imports earlier stages and the base only (the arrows of the README's pipeline)."""
    files = {p: ".".join(p.relative_to(REPO).with_suffix("").parts) for p in (REPO / "birdsed").rglob("*.py")}
    names = {m.removesuffix(".__init__") for m in files.values()}
    wrong = []
    for path, module in files.items():
        module = module.removesuffix(".__init__")
        if module == "birdsed":
            continue
        home, floor = _floor(module)
        for dep in _imports(path):
            if dep not in names or dep == "birdsed":
                continue
            dep_home, dep_floor = _floor(dep)
            if dep_home != home and (dep_floor > floor or (dep_floor == floor and floor > 0)):  # the base is one floor
                wrong.append(f"{module} -> {dep}")
    assert not wrong, f"imports that point up or sideways: {sorted(wrong)}"


def test_stage_packages_and_a_small_top():
    """The tree shows the stages: >= 6 stage packages, each with a docstring that says what it may import; <= 9
    modules at the top of birdsed/ (the base: config, errors, rules, outputs, ownership; the roof: cli, commands)."""
    packages = [p.parent for p in (REPO / "birdsed").glob("*/__init__.py")]
    assert len(packages) >= 6, packages
    for pkg in packages:
        import ast

        doc = ast.get_docstring(ast.parse((pkg / "__init__.py").read_text())) or ""
        what = f"{pkg.name}/__init__.py: say what the stage does and may import"
        assert len(doc) > 80 and "import" in doc.lower(), what
        assert f"birdsed.{pkg.name}" in FLOORS, pkg.name
    top = sorted(p.name for p in (REPO / "birdsed").glob("*.py"))
    assert len(top) <= 9, top


def test_no_import_by_string_reaches_up():
    """No module names another birdsed module in a string for importlib: such an arrow is invisible to the floors
    test above and to an import graph."""
    import re

    hits = []
    for path in (REPO / "birdsed").rglob("*.py"):
        text = path.read_text()
        if re.search(r"""import_module\(\s*f?["']birdsed""", text) or re.search(
            r"""["']birdsed\.[\w.]+:\w+["']""", text
        ):
            hits.append(path.relative_to(REPO).as_posix())
    assert not hits, hits


def test_loading_a_config_imports_no_model_code():
    """The base floor stays light: a config loads (and validates) without torch, timm or Lightning."""
    import subprocess
    import sys

    code = (
        "import sys; from birdsed.config.load import load_config; "
        "load_config('configs/birdnet_sed.yaml', ['train.loss=ce', 'model.head=clip']); "
        "print(sorted(m for m in ('torch', 'timm', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_configs_choices_are_the_registries_names():
    from birdsed.config import FREQ_POOL_NAMES, HEAD_NAMES, LOSS_NAMES
    from birdsed.models.sed import FREQ_POOLS, HEADS
    from birdsed.training.losses import LOSSES

    assert tuple(HEADS) == HEAD_NAMES and tuple(FREQ_POOLS) == FREQ_POOL_NAMES and tuple(LOSSES) == LOSS_NAMES


def test_no_function_over_80_lines():
    """Long functions are split by what they do: none in birdsed/ runs over 80 lines."""
    import ast

    long = {}
    for path in (REPO / "birdsed").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 80:
                long[f"{path.relative_to(REPO).as_posix()}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert not long, long


def test_one_prediction_entry():
    """Soundscapes become predictions one way: `birdsed.inference.predict`, called by the command, the bundle (and
    its notebook), the study runner and the pseudo rounds; none of them chains the inference steps by hand."""
    users = ["birdsed/commands.py", "birdsed/kaggle/bundle.py", "birdsed/study/runner.py", "birdsed/pseudo/rounds.py"]
    for rel in users:
        found = _imports(REPO / rel)
        assert "birdsed.inference.predict.predict" in found, rel
        by_hand = {"birdsed.inference.submit.infer_folder", "birdsed.teacher.source.with_teacher"}
        assert not found & by_hand, (rel, found & by_hand)


def test_one_clip_frame_blend():
    """Validation and inference score a window with one function (models.sed.clip_frame_blend): no other module
    writes the blend, so the figures a run reports and the submissions infer writes cannot drift apart."""
    pattern = re.compile(r"\(1(\.0)? - [\w.]*clip_weight\)")
    writers = [
        p.relative_to(REPO).as_posix() for p in (REPO / "birdsed").rglob("*.py") if pattern.search(p.read_text())
    ]
    assert writers == ["birdsed/models/sed.py"], writers


def test_recipe_comments_carry_no_result_figures():
    """A measured figure lives in benchmarks/RESULTS.md, with its machine and controls; a recipe's comment says what
    a setting is and where it was chosen, not a number that goes stale in another copy."""
    figure = re.compile(
        r"[+\-−]0\.\d{3}|\b0\.\d{3}\b.*AUC|AUC[^#]*\b0\.\d{2,}|\d of \d (paired )?seeds|\d(\.\d)?x faster"
    )
    found = [
        f"{p.relative_to(REPO)}:{n}"
        for p in (REPO / "configs").rglob("*.yaml")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if "#" in line and figure.search(line.split("#", 1)[1])
    ]
    assert not found, found

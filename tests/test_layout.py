"""The package layout rules of docs/architecture.md, checked on the source with ``ast``.

- no file in src/ is longer than 400 lines;
- component packages import nothing from the layers above them (tasks, experiment, models);
- modality packages (text, vision, audio, video) import neither each other nor fusion;
- layers/ imports nothing else from modalab; tasks never import the runner;
- docs/modules.md names every module (and none that is gone), each with a docstring;
- no line of a git-tracked .py file (src, tests, benchmarks, scripts) is longer than 120 characters.
Every import counts, including those inside functions.
"""

import ast
import subprocess
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "modalab"
COMPONENTS = ("align", "fusion", "text", "vision", "audio", "video", "data", "eval", "layers")
ABOVE = ("tasks", "experiment", "models")
MODALITIES = ("text", "vision", "audio", "video")
ROOT = SRC.parents[1]
MAX_LINE = 120  # characters, not bytes (some lines hold Chinese text)


def _files():
    return sorted(SRC.rglob("*.py"))


def _package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every modalab import in ``path``, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    pkg = ["modalab", *path.relative_to(SRC).parent.parts]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] if base in ("modalab",) else [base]
            out += [(node.lineno, n) for n in names]
    return [(ln, m) for ln, m in out if m == "modalab" or m.startswith("modalab.")]


def _target(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_imports_are_parsed_with_relative_and_function_level_ones(tmp_path):
    f = SRC / "vision" / "vit.py"
    mods = [m for _, m in imports(f)]
    assert "modalab.layers" in mods or any(m.startswith("modalab.layers.") for m in mods)
    assert _package(SRC / "layers" / "block.py") == "layers" and _package(SRC / "config.py") == "config"


def test_no_source_file_over_400_lines():
    long = {str(p.relative_to(SRC)): n for p in _files()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert long == {}


@pytest.mark.parametrize("package", COMPONENTS)
def test_component_packages_do_not_import_upwards(package):
    bad = [f"{p.relative_to(SRC)}:{ln} imports {m}" for p in _files() if _package(p) == package
           for ln, m in imports(p) if _target(m) in ABOVE]
    assert bad == []


@pytest.mark.parametrize("package", MODALITIES)
def test_modality_packages_import_neither_each_other_nor_fusion(package):
    others = {*MODALITIES, "fusion"} - {package}
    bad = [f"{p.relative_to(SRC)}:{ln} imports {m}" for p in _files() if _package(p) == package
           for ln, m in imports(p) if _target(m) in others]
    assert bad == []


def test_layers_import_only_layers_and_tasks_never_the_runner():
    bad = [f"{p.relative_to(SRC)}:{ln} imports {m}" for p in _files() if _package(p) == "layers"
           for ln, m in imports(p) if _target(m) != "layers"]
    bad += [f"{p.relative_to(SRC)}:{ln} imports {m}" for p in _files() if _package(p) == "tasks"
            for ln, m in imports(p) if m.startswith(("modalab.experiment.runner", "modalab.experiment.sweep",
                                                      "modalab.experiment.prerequisites"))]
    assert bad == []


def test_module_index_names_every_module_and_no_gone_one():
    """docs/modules.md (scripts/module_index.py) lists exactly the modules under src/modalab."""
    import re

    page = (SRC.parents[1] / "docs" / "modules.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([\w/]+\.py)` \|", page, flags=re.M))
    on_disk = {p.relative_to(SRC).as_posix() for p in _files() if p.name != "__init__.py"}
    assert on_disk - listed == set(), "not in docs/modules.md; run python scripts/module_index.py"
    assert listed - on_disk == set(), "listed in docs/modules.md but gone; run python scripts/module_index.py"


def test_every_module_says_what_it_is():
    """The module index reads each module's docstring: none may be missing."""
    bare = [p.relative_to(SRC).as_posix() for p in _files()
            if p.name != "__init__.py" and not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))]
    assert bare == []


def test_no_python_line_over_120_characters():
    """Every line of every git-tracked .py file fits in ``MAX_LINE`` characters; a failure names file:line."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--", "*.py"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"no git checkout to list the tracked files ({e})")
    files = [ROOT / f for f in listed.split("\0") if f and (ROOT / f).is_file()]
    assert files, "git ls-files listed no .py file"
    long = [f"{p.relative_to(ROOT).as_posix()}:{i}: {len(line)} characters" for p in files
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if len(line) > MAX_LINE]
    assert long == []

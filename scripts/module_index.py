"""Write docs/modules.md: every module of src/modalab with the first sentence of its docstring.

    python scripts/module_index.py           # rewrite docs/modules.md
    python scripts/module_index.py --check   # exit 1 when the page is not what this script writes

tests/test_layout.py checks that the page names every module and no module that is gone; run this
script after adding, moving or removing a module.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "modalab"
PAGE = ROOT / "docs" / "modules.md"
WIDTH = 110  # characters of the summary column
_NOT_AN_END = {"al", "e.g", "i.e", "vs", "cf", "etc", "fig", "eq", "approx"}


def summary(path: Path) -> str:
    """The first sentence of the module's docstring, on one line, cut at ``WIDTH`` characters."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))) or ""
    text = " ".join(doc.split("\n\n")[0].split())
    for m in re.finditer(r"\.(\s|$)", text):  # the first full stop that ends a sentence
        before = text[: m.start()].rsplit(" ", 1)[-1].lower()
        if before not in _NOT_AN_END and not re.fullmatch(r"[a-z]", before):
            text = text[: m.start() + 1]
            break
    text = text.replace("|", "\\|")
    return text if len(text) <= WIDTH else text[: WIDTH - 3].rstrip() + "..."


def modules() -> dict[str, list[Path]]:
    """Modules by package ('' for the top level), ``__init__`` files left out."""
    out: dict[str, list[Path]] = {}
    for p in sorted(SRC.rglob("*.py")):
        if p.name == "__init__.py":
            continue
        pkg = p.parent.relative_to(SRC).as_posix()
        out.setdefault("" if pkg == "." else pkg, []).append(p)
    return out


def render() -> str:
    lines = [
        "# Module index",
        "",
        "Every module under `src/modalab/`, by package, with the first sentence of its docstring.",
        "Written by `python scripts/module_index.py`; `tests/test_layout.py` fails when a module is",
        "missing here or listed but gone. How the packages depend on each other: docs/architecture.md.",
    ]
    for pkg, paths in modules().items():
        lines += ["", f"## `{pkg + '/' if pkg else 'modalab/'}`", "", "| module | what it is |", "|---|---|"]
        for p in paths:
            rel = p.relative_to(SRC).as_posix()
            lines.append(f"| `{rel}` | {summary(p)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        same = PAGE.is_file() and PAGE.read_text(encoding="utf-8") == text
        print(f"{PAGE}: {'up to date' if same else 'out of date; run scripts/module_index.py'}")
        return 0 if same else 1
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE} ({sum(len(v) for v in modules().values())} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

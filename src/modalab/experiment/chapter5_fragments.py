"""One claim of ``docs/chapter5.md`` per file: the fragments the document is assembled from.

A sweep takes CPU hours; its run directories are large and not committed, and they do not all live on
one machine at one time. So the generator (``experiment/chapter5.py``) writes what it derives from a
sweep -- the table row, the budget panel, the pairwise bullets -- to ``docs/chapter5/<sweep>.json``
beside the sweep's report copy, and assembles the document from every fragment there. Regenerating
one claim rewrites its fragment only; the other rows stay exactly as their own sweeps produced them,
each with its own provenance (date, command, code commit of the generator).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from modalab.train.checkpoint import atomic_write_text

# document order of the claims (chapter order); other names follow alphabetically
ORDER = ("temperature", "negative_mix", "curriculum", "negclip_scenes", "levels_scenes", "batch_size",
         "flip_ratio", "flip_scenes", "res_curriculum", "freezing", "per_module_lr", "spec_augment",
         "noisy_pairs", "noise_scenes")
VERSION = 1


@dataclass(frozen=True)
class Fragment:
    name: str  # the sweep directory's name, also the report's: docs/chapter5/<name>.html
    recipe: str  # recipes/chapter5/<stem>.yaml
    sweep: str  # the sweep directory it was generated from
    metric: str
    generated: str  # ISO date
    command: str  # the generator command that wrote it
    generator_commit: str  # code commit of the generator ("unknown" outside git)
    meets_protocol: bool
    row: str  # one markdown table row
    panel: str  # the budget panel (markdown, several lines)
    details: str  # the pairwise bullets (markdown, several lines)
    source: str = "generated from the sweep's run directories"

    def provenance(self) -> str:
        return (f"- `{self.name}`: from `{self.sweep}` on {self.generated}, generator at commit "
                f"{self.generator_commit[:10]}; {self.source} (command in `{self.name}.json`)")


def fragment_path(folder: Path, name: str) -> Path:
    return Path(folder) / f"{name}.json"


def write_fragment(folder: Path, frag: Fragment) -> Path:
    """Write ``frag`` atomically to ``folder/<name>.json``."""
    path = fragment_path(folder, frag.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"version": VERSION, **asdict(frag)}, ensure_ascii=False, indent=1) + "\n")
    return path


def read_fragment(path: Path) -> Fragment:
    """Read one fragment; a clear error names the file and the missing or mistyped key."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(raw, dict) or raw.get("version") != VERSION:
        raise ValueError(f"{path}: expected a chapter-5 fragment object with \"version\": {VERSION}")
    out = {}
    for f in fields(Fragment):
        if f.name not in raw:
            if f.name == "source":
                continue
            raise ValueError(f"{path}: missing key {f.name!r}")
        want = bool if f.name == "meets_protocol" else str
        if not isinstance(raw[f.name], want):
            raise ValueError(f"{path}: key {f.name!r} must be {want.__name__}, got {type(raw[f.name]).__name__}")
        out[f.name] = raw[f.name]
    frag = Fragment(**out)
    if frag.name != Path(path).stem:
        raise ValueError(f"{path}: its name {frag.name!r} does not match the file name")
    if not frag.row.startswith("| ") or "\n" in frag.row:
        raise ValueError(f"{path}: key 'row' must be one markdown table row starting with '| '")
    return frag


def load_fragments(folder: Path) -> list[Fragment]:
    """Every fragment in ``folder`` (``*.json``), in chapter order."""
    frags = [read_fragment(p) for p in sorted(Path(folder).glob("*.json"))]
    rank = {n: i for i, n in enumerate(ORDER)}
    return sorted(frags, key=lambda f: (rank.get(Path(f.recipe).stem, len(ORDER)), f.name))

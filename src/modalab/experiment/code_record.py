"""Which code a run executed: every ``modalab`` module it had loaded, by content hash (``code.json``).

Written when a run finishes, with the CPU it ran on (its model name and the kernel set torch chose:
hosts of a cloud pool often share one host name, and AVX2 and AVX-512 kernels round differently).
``modalab sweep --reuse`` (experiment/reuse.py) compares it with the files of the modalab that would
train the run again: a run whose loaded modules are byte-identical, with the
same versions of the numeric packages it used, computes the same thing. Modules the run never loaded
(reports, the chapter-5 generator, other tasks) cannot have changed its result and are not compared.
The record describes the attempt that finished; a run resumed after its code changed is not detected.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import sys
from pathlib import Path
from typing import Any

CODE_FILE = "code.json"
# loaded by every run but only after its results are written, or only to present them
NEUTRAL = ("experiment/report.py", "experiment/report_panels.py", "experiment/code_record.py",
           "experiment/reuse.py")
PACKAGES = ("numpy", "scikit-learn", "scipy", "pillow", "pyyaml", "pydantic", "soundfile", "librosa", "av")


def package_root() -> Path:
    import modalab

    return Path(modalab.__file__).resolve().parent


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def code_record() -> dict[str, Any]:
    """{"modules": {path relative to the package: sha256}, "packages": {distribution: version},
    "cpu": cpu_info()} of this process, now."""
    root, modules = package_root(), {}
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if (name == "modalab" or name.startswith("modalab.")) and f and f.endswith(".py"):
            p = Path(f).resolve()
            if p.is_relative_to(root) and p.relative_to(root).as_posix() not in NEUTRAL:
                modules[p.relative_to(root).as_posix()] = _sha(p)
    return {"modules": dict(sorted(modules.items())), "packages": {d: _version(d) for d in PACKAGES},
            "cpu": cpu_info()}


def cpu_info() -> dict[str, str]:
    """The CPU's model name (/proc/cpuinfo, else platform) and torch's kernel set (e.g. AVX2, AVX512)."""
    import platform

    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"model": model, "capability": str(torch.backends.cpu.get_cpu_capability())}


def code_differs(record: dict[str, Any]) -> str | None:
    """Why the installed modalab would not run ``record``'s code again (None: it would, byte for byte)."""
    root, modules = package_root(), record.get("modules")
    if not isinstance(modules, dict) or not modules:
        return "no module record"
    for rel, digest in modules.items():
        p = root / rel
        if not p.is_file():
            return f"modalab/{rel} no longer exists"
        if _sha(p) != digest:
            return f"modalab/{rel} changed"
    for dist, version in (record.get("packages") or {}).items():
        if _version(dist) != version:
            return f"{dist} {version} then, {_version(dist)} now"
    cpu = record.get("cpu")
    if cpu and cpu != cpu_info():
        return f"CPU {cpu} then, {cpu_info()} now"
    return None


def code_conflict(runs: list[Path]) -> str | None:
    """Whether the runs computed with the same code: None when every run has a ``code.json`` and no
    module or package differs between any two of them (a module only some runs loaded is not a
    conflict); else what differs or is missing. Runs from different commits may agree."""
    import json

    seen: dict[str, tuple[str, str]] = {}  # "module" or "pkg:dist" -> (value, first run having it)
    for run in runs:
        try:
            rec = json.loads((run / CODE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return f"{run} has no readable {CODE_FILE}"
        items = [*(rec.get("modules") or {}).items(),
                 *((f"pkg:{k}", str(v)) for k, v in (rec.get("packages") or {}).items()),
                 *((f"cpu:{k}", str(v)) for k, v in (rec.get("cpu") or {}).items())]
        for key, value in items:
            first = seen.setdefault(key, (value, str(run)))
            if first[0] != value:
                what = (f"{key[4:]} version" if key.startswith("pkg:") else f"CPU {key[4:]}" if key.startswith("cpu:")
                        else f"modalab/{key}")
                return f"{what} differs between {first[1]} and {run}"
    return None


def cpu_differs(conflict: str | None) -> bool:
    """Whether a :func:`code_conflict` message is about the CPU: another machine, though hosts of a
    cloud pool share one name (doctor, the chapter-5 protocol and the sweep report treat it so)."""
    return bool(conflict) and conflict.startswith("CPU ")

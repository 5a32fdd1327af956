"""Short arm ids for sweep reports: tables and legends carry ``A1``, ``A2``, ...; one legend table
maps each id to the arm's full parameters, so 150-character arm names never push numbers
off-screen.
"""

from __future__ import annotations

import html
from typing import Any, Iterable


def arm_ids(names: Iterable[str]) -> dict[str, str]:
    """``{arm name: 'A1', ...}`` in the sweep's arm order (first grid key varies slowest)."""
    return {name: f"A{i}" for i, name in enumerate(names, 1)}


def label(ids: dict[str, str], arm: str) -> str:
    """The id of ``arm``, or the arm itself when it is not one of the sweep's arms."""
    return ids.get(arm, arm)


def is_categorical(values: list[str]) -> bool:
    """True unless every value reads as a number (then the x axis is ordered and lines make sense)."""
    for v in values:
        try:
            float(v)
        except ValueError:
            return True
    return False


def legend_html(arms: list[Any], ids: dict[str, str]) -> str:
    """A table id -> swept parameters (one line each) -> the arm's directory name."""
    rows = ["<tr><th>id</th><th>parameters</th><th>directory</th></tr>"]
    for a in arms:
        params = "<br>".join(f"{html.escape(k)} = <code>{html.escape(str(v))}</code>"
                             for k, v in (a.params or {}).items()) or "(no override)"
        rows.append(f"<tr><td><b>{ids[a.name]}</b></td><td>{params}</td>"
                    f"<td class=\"dir\">{html.escape(a.name)}</td></tr>")
    return '<table class="legend">' + "".join(rows) + "</table>"


CSS = """table{max-width:100%}td,th{overflow-wrap:anywhere}.legend td.dir{font-size:.75em;color:#666}
code{font-size:.9em}"""

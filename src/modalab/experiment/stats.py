"""Statistics over seeds: which differences between arms are real.

- :func:`mean_ci`: mean, sample std (ddof 1) and the two-sided Student-t confidence interval
  ``mean +/- t_{(1+conf)/2, n-1} * std / sqrt(n)``.
- :func:`paired_bootstrap`: arms paired by seed; the per-seed differences ``d = b - a`` are
  resampled with replacement (``n_boot`` times, seeded); the CI is the percentile interval of the
  resampled means, the p-value the two-sided share of centred resampled means at least as far from
  0 as the observed mean: ``(#{|m* - d_bar| >= |d_bar|} + 1) / (n_boot + 1)``.
- A difference is called significant only when the bootstrap CI excludes 0 *and* the paired
  t-test gives p < alpha: with 3 seeds a bootstrap alone is over-confident (it cannot see the
  tails), so the t-test guards it.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from modalab._optional import lazy

sps = lazy("scipy.stats")  # imported on first use


def mean_ci(values: Sequence[float], conf: float = 0.95) -> tuple[float, float, float, float]:
    """``(mean, std, lo, hi)``; std and the interval are NaN with fewer than 2 values."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n == 0:
        return (math.nan,) * 4  # type: ignore[return-value]
    m = float(x.mean())
    if n < 2:
        return m, math.nan, math.nan, math.nan
    s = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + conf / 2, n - 1)) * s / math.sqrt(n)
    return m, s, m - half, m + half


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], n_boot: int = 10000, conf: float = 0.95, seed: int = 0
) -> tuple[float, float, float, float]:
    """Mean of ``b - a`` (paired), its percentile bootstrap CI and two-sided p: ``(d, lo, hi, p)``."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)  # (n,)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"paired_bootstrap: need two equal-length, non-empty samples, got {len(a)}, {len(b)}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))  # (n_boot, n)
    boot = d[idx].mean(axis=1)  # (n_boot,)
    mean = float(d.mean())
    lo, hi = np.quantile(boot, [(1 - conf) / 2, (1 + conf) / 2])
    extreme = np.abs(boot - mean) >= abs(mean) - 1e-12
    p = (int(extreme.sum()) + 1) / (n_boot + 1)
    return mean, float(lo), float(hi), float(p)


def paired_t_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided paired t-test p-value (NaN with fewer than 2 pairs or zero variance)."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if d.size < 2 or np.allclose(d, d[0]):
        return 0.0 if d.size >= 2 and d[0] != 0 else math.nan
    return float(sps.ttest_rel(b, a).pvalue)


@dataclass
class ArmStats:
    arm: str
    n: int
    mean: float
    std: float
    lo: float
    hi: float
    seeds: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    params: dict = field(default_factory=dict)


@dataclass
class Diff:
    a: str
    b: str
    n_pairs: int
    diff: float  # mean of b - a over shared seeds
    lo: float
    hi: float
    p_boot: float
    p_t: float
    significant: bool


@dataclass
class Comparison:
    metric: str
    arms: list[ArmStats]
    diffs: list[Diff]
    alpha: float = 0.05

    def to_json(self) -> dict:
        return {"metric": self.metric, "alpha": self.alpha,
                "arms": [asdict(a) for a in self.arms], "diffs": [asdict(d) for d in self.diffs]}


def compare_values(
    values: dict[str, dict[int, float]],
    metric: str,
    params: dict[str, dict] | None = None,
    n_boot: int = 10000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Comparison:
    """``values[arm][seed] = metric`` -> per-arm stats and all pairwise differences (paired by seed)."""
    arms = []
    for arm, by_seed in values.items():
        seeds = sorted(by_seed)
        vals = [by_seed[s] for s in seeds]
        m, s, lo, hi = mean_ci(vals, 1 - alpha)
        arms.append(ArmStats(arm, len(vals), m, s, lo, hi, seeds, vals, (params or {}).get(arm, {})))
    diffs = []
    names = list(values)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = sorted(set(values[a]) & set(values[b]))
            if not shared:
                continue
            va, vb = [values[a][s] for s in shared], [values[b][s] for s in shared]
            d, lo, hi, p = paired_bootstrap(va, vb, n_boot, 1 - alpha, seed)
            pt = paired_t_p(va, vb)
            sig = len(shared) >= 2 and (lo > 0 or hi < 0) and p < alpha and (not math.isnan(pt) and pt < alpha)
            diffs.append(Diff(a, b, len(shared), d, lo, hi, p, pt, sig))
    return Comparison(metric, arms, diffs, alpha)


class DuplicateRunWarning(UserWarning):
    """Two run directories gave the same (arm, seed): they were split into separate arms."""


def collect(paths: Sequence[Path], metric: str) -> tuple[dict[str, dict[int, float]], dict[str, dict]]:
    """Read ``metric`` of finished runs under sweep or run directories through the results store.

    Runs are keyed by (arm, seed). When two *different* run directories give the same key (the
    same recipe run twice into two folders, two sweeps of one recipe), nothing is averaged or
    dropped silently: the clashing arms are split by where they came from (``arm [folder]``) and a
    :class:`DuplicateRunWarning` names both directories. The same run given twice counts once.
    """
    from modalab.experiment.store import Store, store_path

    entries: list[tuple[str, str, int, float, dict, str]] = []  # source, arm, seed, value, params, run_id
    for path in paths:
        path = Path(path)
        if (path / "sweep.json").is_file():
            with Store(store_path(path)) as st:
                st.index_sweep(path)
                rows = st.runs(str(path.resolve()))
                finals = st.final(metric)
        elif (path / "run.json").is_file():
            with Store() as st:
                st.index_run(path)
                rows, finals = st.runs(), st.final(metric)
        else:
            raise FileNotFoundError(f"{path} is neither a sweep directory (sweep.json) nor a run (run.json)")
        for r in rows:
            if r["status"] != "finished" or r["run_id"] not in finals:
                continue
            entries.append((str(path), r["arm"], int(r["seed"] or 0), finals[r["run_id"]],
                            json.loads(r["params"] or "{}"), r["run_id"]))
    if not entries:
        raise FileNotFoundError(f"no finished run with '{metric}' in results.json under {', '.join(map(str, paths))}")
    return _merge(entries)


def _merge(entries: list[tuple[str, str, int, float, dict, str]]) -> tuple[dict[str, dict[int, float]], dict[str, dict]]:
    unique: dict[str, tuple[str, str, int, float, dict, str]] = {}
    for e in entries:
        unique.setdefault(e[5], e)  # one run given twice (or a run inside a sweep given too)
    owners: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for src, arm, seed, _, _, run_id in unique.values():
        owners.setdefault((arm, seed), []).append((src, run_id))
    split: set[tuple[str, str]] = set()  # (arm, source) pairs that must become their own arm
    for (arm, seed), who in owners.items():
        if len(who) > 1:
            warnings.warn(
                f"compare: arm '{arm}' seed {seed} comes from {len(who)} run directories "
                f"({', '.join(rid for _, rid in who)}); split into separate arms by folder instead of "
                f"merging", DuplicateRunWarning, stacklevel=3)
            split.update((arm, src) for src, _ in who)
    names = [Path(s).name for s in {s for _, s in split}]

    def label(arm: str, src: str) -> str:
        if (arm, src) not in split:
            return arm
        tag = Path(src).name if names.count(Path(src).name) == 1 else src
        return f"{arm} [{tag}]"

    values: dict[str, dict[int, float]] = {}
    params: dict[str, dict] = {}
    for src, arm, seed, value, prm, run_id in unique.values():
        name = label(arm, src)
        if seed in values.get(name, {}):  # one source holds the same key twice: the run ids differ
            name = f"{name} [{Path(run_id).name}]"
        values.setdefault(name, {})[seed] = value
        params.setdefault(name, prm)
    return values, params


def compare(paths: Sequence[Path], metric: str = "zeroshot_top1", n_boot: int = 10000) -> Comparison:
    values, params = collect(paths, metric)
    return compare_values(values, metric, params, n_boot)


def _f(x: float, digits: int = 4) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def fmt_p(p: float) -> str:
    """A p-value for people: ``<0.001`` rather than ``0.000``."""
    return "nan" if p != p else ("<0.001" if p < 0.001 else f"{p:.3f}")


def format_table(c: Comparison) -> str:
    """The terminal table: arms, then pairwise differences with their significance."""
    w = max([len(a.arm) for a in c.arms] + [4])
    lines = [f"{c.metric}: mean, std and {int(round((1 - c.alpha) * 100))}% t-interval over seeds",
             f"  {'arm'.ljust(w)}  n  {'mean':>7}  {'std':>7}  {'CI low':>7}  {'CI high':>7}"]
    for a in c.arms:
        lines.append(f"  {a.arm.ljust(w)}  {a.n}  {_f(a.mean):>7}  {_f(a.std):>7}  {_f(a.lo):>7}  {_f(a.hi):>7}")
    if c.diffs:
        lines.append("pairwise differences (b - a, paired by seed; bootstrap CI; p: bootstrap / paired t)")
        for d in c.diffs:
            mark = "significant" if d.significant else f"NOT significant at n={d.n_pairs}"
            lines.append(
                f"  {d.b} - {d.a}: {d.diff:+.4f}  [{_f(d.lo)}, {_f(d.hi)}]  p={fmt_p(d.p_boot)}/"
                f"{fmt_p(d.p_t)}  {mark}"
            )
    return "\n".join(lines)


def write_csv(c: Comparison, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["kind", "arm", "vs", "n", "mean_or_diff", "std", "ci_low", "ci_high", "p_boot", "p_t",
                    "significant"])
        for a in c.arms:
            w.writerow(["arm", a.arm, "", a.n, a.mean, a.std, a.lo, a.hi, "", "", ""])
        for d in c.diffs:
            w.writerow(["diff", d.b, d.a, d.n_pairs, d.diff, "", d.lo, d.hi, d.p_boot, d.p_t, d.significant])

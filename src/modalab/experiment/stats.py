"""Statistics over seeds: which differences between arms are real.

- :func:`mean_ci`: mean, sample std (ddof 1) and the two-sided Student-t confidence interval
  ``mean +/- t_{(1+conf)/2, n-1} * std / sqrt(n)``.
- :func:`compare_values`: every pair of arms, paired by seed (``experiment/paired.py``): the paired
  t-test and the exact sign-flip permutation test, both Holm-adjusted across the sweep's
  comparisons; the interval of the mean difference from the two-level bootstrap (seeds, then test
  items, paired across arms) when the runs saved per-item results, else the paired t-interval; the
  minimum detectable effect (80% power, paired t) from the observed SD of the differences.
- A difference is called significant only when both Holm-adjusted p-values are below alpha. The
  sign-flip test cannot go below ``2 / 2^n``: with 5 seeds nothing is significant, by design.
- :func:`paired_bootstrap` (seed-only percentile bootstrap) is kept for callers; it no longer
  decides significance (with 3-5 seeds it cannot see the tails).
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from modalab._optional import lazy

from modalab.experiment.paired import (
    holm, mde_paired, min_sign_flip_p, paired_t, sign_flip_p, t_interval, two_level_bootstrap,
)

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
    """Two-sided paired t-test p-value (NaN with fewer than 2 pairs; see :func:`paired.paired_t`)."""
    return paired_t(a, b)[1]


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
    lo: float  # interval of the mean difference (ci_kind says which)
    hi: float
    p_t: float  # paired t-test, two-sided
    p_perm: float  # exact sign-flip permutation test, two-sided
    p_t_holm: float  # Holm-adjusted across the comparison's pairs
    p_perm_holm: float
    sd_diff: float  # SD of the per-seed differences (ddof 1)
    mde: float  # smallest |difference| the paired t-test detects with 80% power at this n and SD
    ci_kind: str  # "two-level bootstrap (seeds x items)" or "paired t"
    significant: bool


@dataclass
class Comparison:
    metric: str
    arms: list[ArmStats]
    diffs: list[Diff]
    alpha: float = 0.05
    power: float = 0.8

    def to_json(self) -> dict:
        return {"metric": self.metric, "alpha": self.alpha, "power": self.power,
                "arms": [asdict(a) for a in self.arms], "diffs": [asdict(d) for d in self.diffs]}


Items = dict[str, dict[int, np.ndarray]]  # items[arm][seed] = per-item scores on that seed's test items


def compare_values(
    values: dict[str, dict[int, float]],
    metric: str,
    params: dict[str, dict] | None = None,
    n_boot: int = 4000,
    alpha: float = 0.05,
    seed: int = 0,
    items: Items | None = None,
    power: float = 0.8,
) -> Comparison:
    """``values[arm][seed] = metric`` -> per-arm stats and all pairwise differences (paired by seed).

    ``items`` (optional) gives per-item scores per arm and seed for the two-level bootstrap; a pair
    of arms without items for every shared seed (or on different items) falls back to the paired
    t-interval. p-values are Holm-adjusted over all pairs of this comparison.
    """
    arms = []
    for arm, by_seed in values.items():
        seeds = sorted(by_seed)
        vals = [by_seed[s] for s in seeds]
        m, s, lo, hi = mean_ci(vals, 1 - alpha)
        arms.append(ArmStats(arm, len(vals), m, s, lo, hi, seeds, vals, (params or {}).get(arm, {})))
    rows = []
    names = list(values)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = sorted(set(values[a]) & set(values[b]))
            if not shared:
                continue
            va, vb = [values[a][s] for s in shared], [values[b][s] for s in shared]
            d = np.asarray(vb) - np.asarray(va)  # (n,)
            sd = float(d.std(ddof=1)) if d.size > 1 else math.nan
            ia, ib = (items or {}).get(a, {}), (items or {}).get(b, {})
            if all(s in ia and s in ib and len(ia[s]) == len(ib[s]) for s in shared):
                _, lo, hi = two_level_bootstrap([ia[s] for s in shared], [ib[s] for s in shared],
                                                n_boot, 1 - alpha, seed)
                kind = "two-level bootstrap (seeds x items)"
            else:
                (lo, hi), kind = t_interval(d, 1 - alpha), "paired t"
            rows.append(dict(a=a, b=b, n_pairs=len(shared), diff=float(d.mean()), lo=lo, hi=hi,
                             p_t=paired_t(va, vb)[1], p_perm=sign_flip_p(d), sd_diff=sd,
                             mde=mde_paired(sd, len(shared), alpha, power), ci_kind=kind))
    t_holm, perm_holm = holm([r["p_t"] for r in rows]), holm([r["p_perm"] for r in rows])
    diffs = []
    for r, pt, pp in zip(rows, t_holm, perm_holm):
        sig = r["n_pairs"] >= 2 and pt < alpha and pp < alpha
        diffs.append(Diff(**r, p_t_holm=pt, p_perm_holm=pp, significant=bool(sig)))
    return Comparison(metric, arms, diffs, alpha, power)


class DuplicateRunWarning(UserWarning):
    """Two run directories gave the same (arm, seed): they were split into separate arms."""


def collect(paths: Sequence[Path], metric: str) -> tuple[dict[str, dict[int, float]], dict[str, dict]]:
    """Read ``metric`` of finished runs under sweep or run directories through the results store.

    Runs are keyed by (arm, seed). When two *different* run directories give the same key (the
    same recipe run twice into two folders, two sweeps of one recipe), nothing is averaged or
    dropped silently: the clashing arms are split by where they came from (``arm [folder]``) and a
    :class:`DuplicateRunWarning` names both directories. The same run given twice counts once.
    """
    entries = _entries(paths, metric)
    if not entries:
        raise FileNotFoundError(f"no finished run with '{metric}' in results.json under {', '.join(map(str, paths))}")
    return _merge(entries)


def _entries(paths: Sequence[Path], metric: str) -> list[tuple[str, str, int, Any, dict, str]]:
    """``(source, arm, seed, value, params, run_id)`` of every finished run with ``metric``."""
    from modalab.experiment.store import Store, store_path

    entries: list[tuple[str, str, int, Any, dict, str]] = []  # source, arm, seed, value, params, run_id
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
    return entries


def _merge(entries: list[tuple[str, str, int, Any, dict, str]]) -> tuple[dict[str, dict[int, Any]], dict[str, dict]]:
    unique: dict[str, tuple[str, str, int, Any, dict, str]] = {}
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


def collect_items(paths: Sequence[Path], metric: str) -> Items:
    """Per-item scores of ``metric`` saved by finished runs (``artifacts/per_item.json``)."""
    from modalab.experiment.rundir import RunDir

    with warnings.catch_warnings():  # collect() has warned about duplicate runs already
        warnings.simplefilter("ignore", DuplicateRunWarning)
        run_ids, _ = _merge([(s, a, seed, rid, prm, rid) for s, a, seed, _, prm, rid in _entries(paths, metric)])
    items: Items = {}
    for arm, by_seed in run_ids.items():  # the same arm names as collect() gives
        for seed, rid in by_seed.items():
            saved = RunDir(Path(rid)).read_artifact("per_item") or {}
            scores = (saved.get("metrics") or {}).get(metric)
            if scores is not None:
                items.setdefault(arm, {})[seed] = np.asarray(scores, dtype=np.float64)
    return items


def compare(paths: Sequence[Path], metric: str = "zeroshot_top1", n_boot: int = 4000) -> Comparison:
    values, params = collect(paths, metric)
    return compare_values(values, metric, params, n_boot, items=collect_items(paths, metric))


def _f(x: float, digits: int = 4) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def fmt_p(p: float) -> str:
    """A p-value for people: exact to 3 significant digits, never a bare ``<0.001``."""
    if p != p:
        return "nan"
    return f"{p:.2e}" if 0 < p < 0.001 else (f"{p:.4f}" if p < 0.1 else f"{p:.3f}")


def fmt_diff(d: Diff, alpha: float = 0.05, power: float = 0.8) -> str:
    """One difference as one line: estimate, interval, both p-values (raw and Holm), verdict, MDE."""
    verdict = "significant" if d.significant else (
        f"not significant at n={d.n_pairs} (MDE at {power:.0%} power: {_f(d.mde)}; "
        f"smallest possible sign-flip p at this n: {fmt_p(min_sign_flip_p(d.n_pairs))})")
    return (f"{d.b} - {d.a}: {d.diff:+.4f}  [{_f(d.lo)}, {_f(d.hi)}] ({d.ci_kind})  "
            f"p_t={fmt_p(d.p_t)} (Holm {fmt_p(d.p_t_holm)})  p_signflip={fmt_p(d.p_perm)} "
            f"(Holm {fmt_p(d.p_perm_holm)})  {verdict}")


def format_table(c: Comparison) -> str:
    """The terminal table: arms, then pairwise differences with their significance."""
    w = max([len(a.arm) for a in c.arms] + [4])
    lines = [f"{c.metric}: mean, std and {int(round((1 - c.alpha) * 100))}% t-interval over seeds",
             f"  {'arm'.ljust(w)}  n  {'mean':>7}  {'std':>7}  {'CI low':>7}  {'CI high':>7}"]
    for a in c.arms:
        lines.append(f"  {a.arm.ljust(w)}  {a.n}  {_f(a.mean):>7}  {_f(a.std):>7}  {_f(a.lo):>7}  {_f(a.hi):>7}")
    if c.diffs:
        lines.append(f"pairwise differences (b - a, paired by seed; {int(round((1 - c.alpha) * 100))}% interval; "
                     f"paired t and exact sign-flip p, Holm-adjusted over {len(c.diffs)} comparison(s))")
        lines += ["  " + fmt_diff(d, c.alpha, c.power) for d in c.diffs]
    return "\n".join(lines)


def write_csv(c: Comparison, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["kind", "arm", "vs", "n", "mean_or_diff", "std", "ci_low", "ci_high", "ci_kind", "p_t",
                    "p_t_holm", "p_signflip", "p_signflip_holm", "mde_80", "significant"])
        for a in c.arms:
            w.writerow(["arm", a.arm, "", a.n, a.mean, a.std, a.lo, a.hi, "t", "", "", "", "", "", ""])
        for d in c.diffs:
            w.writerow(["diff", d.b, d.a, d.n_pairs, d.diff, d.sd_diff, d.lo, d.hi, d.ci_kind, d.p_t, d.p_t_holm,
                        d.p_perm, d.p_perm_holm, d.mde, d.significant])

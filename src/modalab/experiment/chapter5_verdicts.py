"""The chapter-5 verdicts that read more than the claimed arm's rank: FLIP's accuracy-for-speed trade,
the resolution curriculum's tokens saved, and ALIGN's noise tolerance (experiment/chapter5.py uses them)."""

from __future__ import annotations

from pathlib import Path

import yaml

from modalab.experiment.stats import Comparison, compare


def as_float(v: str) -> float:
    """A swept value as a number (nan when it is not one)."""
    try:
        return float(v)
    except ValueError:
        return float("nan")


def find_diff(comp: Comparison, a: str, b: str):  # type: ignore[no-untyped-def]
    for d in comp.diffs:
        if {d.a, d.b} == {a, b}:
            return d
    return None


def flip_verdict(comp: Comparison, root: Path) -> str:
    """FLIP's claim is a trade: about 1% accuracy lost for about 2.5x training speed."""
    by_r = {as_float(a.params.get("model.vision.patch_dropout", "nan")): a for a in comp.arms}
    if 0.0 not in by_r or 0.5 not in by_r:
        return "no verdict (needs patch_dropout 0.0 and 0.5 arms)"
    full, masked = by_r[0.0], by_r[0.5]
    d = find_diff(comp, full.arm, masked.arm)
    sig = "significant" if d and d.significant else "not significant"
    drop = (full.mean - masked.mean) * 100
    t, clock = _step_seconds(root)
    r = {as_float(a.params.get("model.vision.patch_dropout", "nan")): t.get(a.arm, float("nan")) for a in comp.arms}
    speed = r.get(0.0, float("nan")) / r.get(0.5, float("nan"))
    held = drop <= 2.0 and speed >= 2.0
    return (f"{'**held**' if held else '**not held here**'}: accuracy {-drop:+.1f} points ({sig}), "
            f"training {speed:.2f}x faster ({clock}; claim: ~-1 point for ~2.5x)")


def _step_seconds(root: Path) -> tuple[dict[str, float], str]:
    """Mean training seconds per arm and which clock: process CPU without the in-loop evaluations when
    the runs recorded it (steady under load), else the loop's wall seconds."""
    def means(key: str) -> dict[str, float]:
        try:
            return {a.arm: a.mean for a in compare([root], key).arms}
        except (KeyError, ValueError, FileNotFoundError):
            return {}
    cpu, ev = means("train_cpu_seconds"), means("eval_cpu_seconds_in_loop")
    if cpu and ev.keys() == cpu.keys():
        return {k: cpu[k] - ev[k] for k in cpu}, "CPU seconds, evaluations excluded"
    return means("train_seconds"), "wall seconds"


def res_curriculum_verdict(comp: Comparison, root: Path) -> str:
    """The curriculum's claim: about as accurate as full resolution throughout, for fewer tokens."""
    key = "data.batching.schedule"
    flat = [a for a in comp.arms if a.params.get(key, "null") in ("null", "None", "")]
    sched = [a for a in comp.arms if a not in flat]
    if not flat or not sched:
        return "no verdict (needs a schedule arm and a schedule=null arm)"
    full, cur = flat[0], sched[0]
    d = find_diff(comp, full.arm, cur.arm)
    sig = "significant" if d and d.significant else "not significant"
    drop = (full.mean - cur.mean) * 100
    try:
        tok = {a.arm: a.mean for a in compare([root], "train_tokens_per_image").arms}
        saved = 1 - tok[cur.arm] / tok[full.arm]
    except (KeyError, ValueError, FileNotFoundError, ZeroDivisionError):
        saved = float("nan")
    held = drop <= 2.0 and saved > 0
    return (f"{'**held**' if held else '**not held here**'}: accuracy {-drop:+.1f} points ({sig}) "
            f"for {saved:.0%} fewer training tokens per image")


NOISE_CLAIMED, NOISE_MARGIN = 0.2, 0.02  # ours: the share of mismatched pairs and the cost "feasible" allows


def noise_verdict(comp: Comparison, root: Path) -> str:
    """ALIGN's point read as a tolerance: with NOISE_CLAIMED of the training pairs given another pair's
    caption, accuracy stays within NOISE_MARGIN of clean training. *held* when the whole interval of
    (clean - noisy) lies below the margin, *not held here* when it lies above it, else inconclusive;
    the cost at every noise level of the sweep is listed."""
    by = {_swap_level(a.params): a for a in comp.arms}
    if 0.0 not in by or NOISE_CLAIMED not in by:
        return f"no verdict (needs arms with data.noise.swap 0.0 (or no noise) and {NOISE_CLAIMED})"
    clean, parts, word = by[0.0], [], "**inconclusive**"
    for level in sorted(k for k in by if k > 0):
        d = find_diff(comp, clean.arm, by[level].arm)
        if d is None:
            continue
        sign = -1.0 if d.a == clean.arm else 1.0  # d.diff is b - a; the cost is clean - noisy
        cost, lo, hi = sign * d.diff, min(sign * d.lo, sign * d.hi), max(sign * d.lo, sign * d.hi)
        parts.append(f"swap {level:g}: cost {cost * 100:+.1f} points [{lo * 100:+.1f}, {hi * 100:+.1f}]")
        if level == NOISE_CLAIMED:
            if hi <= NOISE_MARGIN:
                word = "**held**"
            elif lo > NOISE_MARGIN:
                word = "**not held here**"
    return (f"{word} (margin {NOISE_MARGIN * 100:.0f} points at swap {NOISE_CLAIMED:g}: held if the whole interval "
            f"of the cost lies below it): " + "; ".join(parts))


def _swap_level(params: dict[str, str]) -> float:
    """The share of swapped captions an arm trained with: swept as ``data.noise.swap``, or as the whole
    ``data.noise`` section (``null`` -- clean, the default recipe itself -- or ``{swap: 0.2}``)."""
    if "data.noise.swap" in params:
        return as_float(params["data.noise.swap"])
    try:
        noise = yaml.safe_load(params.get("data.noise", "nan"))
    except yaml.YAMLError:
        return float("nan")
    if noise is None:
        return 0.0
    return as_float(str(noise.get("swap", 0.0))) if isinstance(noise, dict) else float("nan")

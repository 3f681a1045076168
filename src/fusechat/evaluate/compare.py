"""Comparisons behind the result page: each model's gain over its seed's CLM-only baseline, and the paper's claims,
each with its standard error, written with as many digits as the error calls for, and marked only when the margin
is significant.

Two fine-tunes of one pivot differ by a few thousandths of a bit per byte; a table rounded to three decimals shows
"(-0.000)" and a ✓ given to any positive margin celebrates noise. So every number is printed to two significant
digits of its own error, errors of differences are paired over the items both models scored where the per-item
results are at hand, and a claim is ✓ or ✗ only when its margin is at least `Z` standard errors. Paired errors
can be so small that a difference of a millionth of a bit per byte is "significant" (two merges whose weights
differ by 1%): a margin under `NEGLIGIBLE` of what fine-tuning itself changed on that task is marked "=" instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from fusechat.evaluate.paired import paired_difference, read_items
from fusechat.evaluate.tasks import TASKS

Z = 2.0  # margins within ±Z standard errors are "≈": this evaluation cannot tell the two models apart
# 0.1 %: fusion moves these scores by 1-3 % of what fine-tuning does, so 1 % would hide real effects
NEGLIGIBLE = 0.001  # share of the CLM-only baseline's own change from the pivot below which a margin is "="
GROUPS = ("source", "pivot", "clm", "pairwise", "multi", "merge")
TRAINED = ("pairwise", "multi", "merge")
LOWER_IS_BETTER = {t.metric for t in TASKS.values() if not t.higher_is_better}


def decimals(se: float | None, least: int = 3, most: int = 6) -> int:
    """Decimals that show two significant digits of `se` (within [least, most])."""
    if se is None or not math.isfinite(se) or se <= 0:
        return least
    return min(most, max(least, 1 - math.floor(math.log10(se))))


def fmt(value: float, se: float | None = None, signed: bool = False) -> str:
    """`value ± se`, both to two significant digits of the error (the value alone when there is no error).

    A value smaller than that precision gets the digits to show two significant ones, never "0.000".
    """
    d = decimals(se)
    if value != 0 and math.isfinite(value) and abs(value) < 10 ** (1 - d):
        d = min(6, 1 - math.floor(math.log10(abs(value)) + 1e-9))  # 1e-9: 0.0001 stored as 0.0000999…
    text = f"{value:+.{d}f}" if signed else f"{value:.{d}f}"
    if se is not None and math.isfinite(se):
        text += f" ± {se:.{d}f}"
    return text


def cell(scores: dict, model: str | None, task: str) -> tuple[float, float] | None:
    """(value, standard error) of one model on one task, or None when there is no number to show."""
    r = scores.get(model, {}).get(task) if model else None
    if r is None or (task == "mtbench" and not r.get("judged")):
        return None
    value, se = r.get("value"), r.get("stderr")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value), float(se) if se is not None else float("nan")


def lower_is_better(scores: dict, task: str) -> bool:
    metrics = {m.get(task, {}).get("metric") for m in scores.values()}
    return bool(metrics & LOWER_IS_BETTER)


def ordered(rows: list[dict]) -> list[dict]:
    for r in rows:
        if r.get("group") not in GROUPS:
            raise ValueError(f"report row {r}: 'group' must be one of {', '.join(GROUPS)}")
    return sorted(rows, key=lambda r: GROUPS.index(r["group"]))


def tasks_of(scores: dict, rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(t for r in rows for t in scores.get(r["model"], {})))


@dataclass
class Margin:
    """How much better `a` is than `b` on one task (in the better direction), with its standard error."""

    gain: float
    se: float
    kind: str  # "paired SE, n = N" or "combined SE"
    floor: float = 0.0  # |gain| below this is negligible however significant (see NEGLIGIBLE)

    @property
    def z(self) -> float:
        return self.gain / self.se if self.se and math.isfinite(self.se) else math.nan

    def mark(self) -> str:
        if math.isnan(self.z):
            return "?"
        if abs(self.z) >= Z and abs(self.gain) < self.floor:
            return "="
        return "✓" if self.z >= Z else ("✗" if self.z <= -Z else "≈")

    def text(self) -> str:
        d = max(4, decimals(self.se))
        z = f" ({self.z:+.1f} {self.kind})" if not math.isnan(self.z) else ""
        return f"{self.gain:+.{d}f}{z}"


class Comparer:
    """Margins between rows of one report, paired over per-item results when `items_dir` holds them."""

    def __init__(self, scores: dict, items_dir: Path | None = None):
        self.scores, self.items_dir = scores, items_dir

    def raw(self, a: str, b: str, task: str) -> tuple[float, float, str] | None:
        """value(a) − value(b) with its standard error (paired where possible), in the metric's own direction."""
        ca, cb = cell(self.scores, a, task), cell(self.scores, b, task)
        if ca is None or cb is None:
            return None
        if self.items_dir is not None:
            pair = paired_difference(
                read_items(self.items_dir / a / f"{task}.jsonl"), read_items(self.items_dir / b / f"{task}.jsonl")
            )
            if pair is not None:
                return pair[0], pair[1], f"paired SE, n = {pair[2]}"
        return ca[0] - cb[0], math.hypot(ca[1], cb[1]), "combined SE"

    def margin(self, a: str, b: str, task: str) -> Margin | None:
        raw = self.raw(a, b, task)
        if raw is None:
            return None
        sign = -1.0 if lower_is_better(self.scores, task) else 1.0
        return Margin(sign * raw[0], raw[1], raw[2])


def baselines(rows: list[dict]) -> dict[object, str]:
    """The CLM-only baseline's model key for each seed (key None: the first baseline, for rows without a seed)."""
    out: dict[object, str] = {}
    for r in rows:
        if r["group"] == "clm":
            out.setdefault(r.get("seed"), r["model"])
            out.setdefault(None, r["model"])
    return out


def gains(scores: dict, rows: list[dict], items_dir: Path | None = None) -> dict[str, dict[str, list[Margin]]]:
    """Each trained or merged model's gain over its own seed's CLM-only baseline: {name: {task: [per seed]}}."""
    comparer, base = Comparer(scores, items_dir), baselines(rows)
    out: dict[str, dict[str, list[Margin]]] = {}
    for r in ordered(rows):
        b = base.get(r.get("seed"), base.get(None))
        if r["group"] not in TRAINED or b is None:
            continue
        for t in tasks_of(scores, rows):
            if (m := comparer.margin(r["model"], b, t)) is not None:
                out.setdefault(r.get("name", r["model"]), {}).setdefault(t, []).append(m)
    return out


def combine(margins: list[Margin]) -> Margin:
    """The mean margin over independent seeds, with the error of that mean."""
    n = len(margins)
    se = math.sqrt(sum(m.se**2 for m in margins)) / n
    return Margin(sum(m.gain for m in margins) / n, se, f"SE over {n} seeds", sum(m.floor for m in margins) / n)


def claims(scores: dict, rows: list[dict], items_dir: Path | None = None) -> list[str]:
    """The paper's ordering as claims in words, checked task by task within each seed, then across seeds.

    Claims: every fused target (pairwise, Multi) beats the CLM-only baseline of its seed; VaRM beats every other
    merge and every fused target of its seed. Each line: ✓ (holds by ≥ Z SE), ✗ (the reverse holds by ≥ Z SE),
    ≈ (within Z SE: not distinguishable here), = (significant but under NEGLIGIBLE of the baseline's own change
    from the pivot) or ? (no error known), the claim, and the margin with its error.
    """
    rows = ordered(rows)
    tasks = tasks_of(scores, rows)
    comparer = Comparer(scores, items_dir)
    seeds = list(dict.fromkeys(r.get("seed") for r in rows if r["group"] in ("clm", *TRAINED)))
    lines: list[str] = []
    per_seed: dict[tuple[str, str, str], list[Margin]] = {}
    pivot = next((r for r in rows if r["group"] == "pivot"), None)

    def check(a: dict, b: dict, t: str, floor: float) -> str | None:
        m = comparer.margin(a["model"], b["model"], t)
        if m is None:
            return None
        m.floor = floor
        per_seed.setdefault((a.get("name", a["model"]), b.get("name", b["model"]), t), []).append(m)
        return f"{m.mark()} {a.get('label', a['model'])} beats {b.get('label', b['model'])} on {t}: {m.text()}"

    for seed in seeds:
        group = [r for r in rows if r.get("seed") == seed]
        base = next((r for r in group if r["group"] == "clm"), None)
        fused = [r for r in group if r["group"] in ("pairwise", "multi")]
        merges = [r for r in group if r["group"] == "merge"]
        varm = next((r for r in merges if "varm" in (r.get("method") or r["model"]).lower()), None)
        for t in tasks:
            tuned = comparer.raw(base["model"], pivot["model"], t) if base and pivot else None
            floor = NEGLIGIBLE * abs(tuned[0]) if tuned else 0.0
            if base:
                lines += [c for r in fused if (c := check(r, base, t, floor))]
            if varm:
                lines += [c for r in merges + fused if r is not varm and (c := check(varm, r, t, floor))]
    if len(seeds) > 1:
        lines.append(f"Across the {len(seeds)} seeds (mean margin and its error; then each seed's margin):")
        for (a, b, t), margins in per_seed.items():
            if len(margins) == len(seeds):
                mean = combine(margins)
                each = ", ".join(m.text() for m in margins)
                lines.append(f"{mean.mark()} {a} beats {b} on {t}: {mean.text()}; each seed: {each}")
    return lines


def kept_gains(gained: dict[str, dict[str, list[Margin]]], rows: list[dict]) -> list[str]:
    """How much of each pairwise target's gain (over CLM-only) each merge keeps, on the tasks where that target
    gained significantly (mean over seeds): the share the paper's VaRM claim is about."""
    pairwise = list(dict.fromkeys(r.get("name", r["model"]) for r in rows if r["group"] == "pairwise"))
    merges = list(dict.fromkeys(r.get("name", r["model"]) for r in rows if r["group"] == "merge"))
    lines = []
    for p in pairwise:
        for t, margins in gained.get(p, {}).items():
            target = combine(margins)
            if target.mark() != "✓":
                continue
            kept = []
            for m in merges:
                if t in gained.get(m, {}):
                    kept.append(f"{m} {combine(gained[m][t]).gain / target.gain:.0%}")
            if kept:
                lines.append(f"{p}'s gain on {t} ({target.text()}): kept by " + ", ".join(kept))
    return lines

"""Group comparisons for the variability study (scipy): Kruskal-Wallis, pairwise Mann-Whitney U (independent
groups) or Wilcoxon signed-rank (paired groups), Holm (or Bonferroni) correction of the pairwise p-values.

Undefined values (None/NaN) are dropped before testing (for paired tests, the pair is dropped). A test that
cannot be computed (too few values, all values identical for Wilcoxon...) returns ``p=None`` with a
``note`` saying why — never a NaN p-value.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np


def _clean(values) -> np.ndarray:
    out = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return np.asarray(out, dtype=float)


def _finite_or_none(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni step-down adjusted p-values (None entries stay None and do not count)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    order = sorted(idx, key=lambda i: pvalues[i])
    running = 0.0
    for rank, i in enumerate(order):
        adj = min(1.0, (m - rank) * float(pvalues[i]))
        running = max(running, adj)
        out[i] = running
    return out


def bonferroni(pvalues: Sequence[float | None]) -> list[float | None]:
    m = sum(p is not None for p in pvalues)
    return [None if p is None else min(1.0, p * m) for p in pvalues]


def kruskal(groups: dict[str, Sequence[float]]) -> dict:
    """Kruskal-Wallis H test across the groups with at least one defined value.

    Returns {statistic, p, groups (used), n (per group), note}; p None when fewer than 2 groups or all values
    identical."""
    data = {k: _clean(v) for k, v in groups.items()}
    used = {k: v for k, v in data.items() if len(v) > 0}
    res = {"test": "kruskal-wallis", "groups": list(used), "n": {k: int(len(v)) for k, v in data.items()},
           "statistic": None, "p": None, "note": ""}
    if len(used) < 2:
        res["note"] = "not computable: fewer than 2 groups with values"
        return res
    allv = np.concatenate(list(used.values()))
    if np.all(allv == allv[0]):
        res["note"] = "not computable: all values identical"
        return res
    from scipy import stats

    r = stats.kruskal(*used.values())
    res.update(statistic=_finite_or_none(r.statistic), p=_finite_or_none(r.pvalue))
    return res


def pairwise(groups: dict[str, Sequence[float]], paired: bool = False, correction: str = "holm",
             alternative: str = "two-sided") -> list[dict]:
    """All pairwise tests between groups: Mann-Whitney U (``paired=False``) or Wilcoxon signed-rank
    (``paired=True``: the groups' lists must be aligned, entry i of every group from the same unit, e.g. case).

    Returns one dict per pair: a, b, test, n_a, n_b, statistic, p, p_adj (``correction``: holm | bonferroni |
    none), median_a, median_b, note."""
    from scipy import stats

    names = list(groups)
    rows = []
    for a, b in itertools.combinations(names, 2):
        row = {"a": a, "b": b, "test": "wilcoxon" if paired else "mann-whitney-u", "statistic": None, "p": None,
               "note": ""}
        if paired:
            va, vb = list(groups[a]), list(groups[b])
            if len(va) != len(vb):
                raise ValueError(f"paired test: groups {a!r} and {b!r} have different lengths ({len(va)}, {len(vb)})")
            keep = [(x, y) for x, y in zip(va, vb) if x is not None and y is not None
                    and math.isfinite(float(x)) and math.isfinite(float(y))]
            xa = np.asarray([k[0] for k in keep], float)
            xb = np.asarray([k[1] for k in keep], float)
            row.update(n_a=len(xa), n_b=len(xb))
            if len(xa) < 2:
                row["note"] = "not computable: fewer than 2 complete pairs"
            elif np.all(xa - xb == 0):
                row["note"] = "not computable: all differences are zero"
            else:
                r = stats.wilcoxon(xa, xb, alternative=alternative)
                row.update(statistic=_finite_or_none(r.statistic), p=_finite_or_none(r.pvalue))
        else:
            xa, xb = _clean(groups[a]), _clean(groups[b])
            row.update(n_a=len(xa), n_b=len(xb))
            if len(xa) < 1 or len(xb) < 1:
                row["note"] = "not computable: a group has no values"
            else:
                r = stats.mannwhitneyu(xa, xb, alternative=alternative)
                row.update(statistic=_finite_or_none(r.statistic), p=_finite_or_none(r.pvalue))
        row["median_a"] = float(np.median(xa)) if len(xa) else None
        row["median_b"] = float(np.median(xb)) if len(xb) else None
        rows.append(row)
    ps = [r["p"] for r in rows]
    if correction == "holm":
        adj = holm(ps)
    elif correction == "bonferroni":
        adj = bonferroni(ps)
    elif correction in (None, "none"):
        adj = ps
    else:
        raise ValueError(f"unknown correction {correction!r} (holm, bonferroni, none)")
    for r, p in zip(rows, adj):
        r["p_adj"] = p
        r["correction"] = correction or "none"
    return rows

"""bonemet.stats against scipy directly."""

import numpy as np
import pytest
from scipy import stats as ss

from bonemet import stats


@pytest.fixture
def groups():
    rng = np.random.default_rng(7)
    return {"a": list(rng.normal(0.8, 0.05, 12)), "b": list(rng.normal(0.7, 0.08, 9)),
            "c": list(rng.normal(0.75, 0.05, 15))}


def test_kruskal_matches_scipy(groups):
    r = stats.kruskal(groups)
    ref = ss.kruskal(*groups.values())
    assert r["statistic"] == pytest.approx(ref.statistic) and r["p"] == pytest.approx(ref.pvalue)


def test_kruskal_drops_undefined_values(groups):
    g = {k: v + [None, float("nan")] for k, v in groups.items()}
    assert stats.kruskal(g)["p"] == pytest.approx(ss.kruskal(*groups.values()).pvalue)
    assert stats.kruskal({"a": [1.0, 2.0]})["p"] is None
    r = stats.kruskal({"a": [1.0, 1.0], "b": [1.0]})
    assert r["p"] is None and "identical" in r["note"]


def test_mann_whitney_with_holm_matches_scipy(groups):
    rows = stats.pairwise(groups, paired=False)
    assert [(r["a"], r["b"]) for r in rows] == [("a", "b"), ("a", "c"), ("b", "c")]
    raw = [ss.mannwhitneyu(groups[r["a"]], groups[r["b"]], alternative="two-sided").pvalue for r in rows]
    assert [r["p"] for r in rows] == pytest.approx(raw)
    # Holm by hand
    order = np.argsort(raw)
    m = len(raw)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * raw[i]))
        adj[i] = running
    assert [r["p_adj"] for r in rows] == pytest.approx(list(adj))


def test_wilcoxon_paired_matches_scipy():
    rng = np.random.default_rng(3)
    x = rng.normal(0.8, 0.05, 10)
    y = x - rng.normal(0.03, 0.02, 10)
    z = x + rng.normal(0.0, 0.03, 10)
    rows = stats.pairwise({"x": list(x), "y": list(y), "z": list(z)}, paired=True)
    for r, (u, v) in zip(rows, [(x, y), (x, z), (y, z)]):
        ref = ss.wilcoxon(u, v)
        assert r["test"] == "wilcoxon" and r["statistic"] == pytest.approx(ref.statistic)
        assert r["p"] == pytest.approx(ref.pvalue)


def test_wilcoxon_drops_incomplete_pairs_and_flags_not_computable():
    rows = stats.pairwise({"x": [1.0, 2.0, None, 4.0, 5.0, 7.0], "y": [1.5, 2.5, 3.0, None, 4.0, 8.5]},
                          paired=True)
    ref = ss.wilcoxon([1.0, 2.0, 5.0, 7.0], [1.5, 2.5, 4.0, 8.5])
    assert rows[0]["n_a"] == 4 and rows[0]["p"] == pytest.approx(ref.pvalue)
    same = stats.pairwise({"x": [1.0, 2.0], "y": [1.0, 2.0]}, paired=True)[0]
    assert same["p"] is None and "zero" in same["note"] and same["p_adj"] is None
    with pytest.raises(ValueError, match="different lengths"):
        stats.pairwise({"x": [1.0], "y": [1.0, 2.0]}, paired=True)


def test_holm_and_bonferroni():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.01, None, 0.5]) == [pytest.approx(0.02), None, pytest.approx(0.5)]
    assert stats.bonferroni([0.01, 0.3]) == pytest.approx([0.02, 0.6])

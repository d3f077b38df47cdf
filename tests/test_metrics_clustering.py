import numpy as np
import pytest

from aas_core.metrics import clustering as cm


def test_hand_worked_pairwise_scores():
    # true {0,1} {2,3}; predicted {0,1,2} {3}: predicted pairs 01 02 12, one correct
    assert cm.pairwise_scores([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx((1 / 3, 1 / 2, 0.4))
    assert cm.pairwise_scores([0, 1, 2], [0, 1, 2]) == (1.0, 1.0, 1.0)


def test_noise_counts_as_singletons():
    assert cm.pairwise_scores([0, 0, 1, 1], [-1, -1, 3, 3]) == pytest.approx((1, 0.5, 2 / 3))
    # taken literally, -1 is one more cluster label
    assert cm.pairwise_scores([0, 0, 1, 1], [-1, -1, 3, 3], noise_as_singletons=False) == (1, 1, 1)


@pytest.mark.parametrize("seed", range(5))
def test_ari_and_nmi_match_sklearn(seed):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 30, 500)
    p = np.where(rng.random(500) < 0.7, t, rng.integers(0, 40, 500))
    assert cm.ari(t, p) == pytest.approx(sklearn_metrics.adjusted_rand_score(t, p), abs=1e-12)
    assert cm.nmi(t, p) == pytest.approx(
        sklearn_metrics.normalized_mutual_info_score(t, p), abs=1e-10
    )


def test_pairwise_scores_match_a_pair_enumeration():
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 6, 80), rng.integers(0, 9, 80)
    iu = np.triu_indices(80, 1)
    same_t, same_p = (t[:, None] == t)[iu], (p[:, None] == p)[iu]
    tp = np.sum(same_t & same_p)
    assert cm.pairwise_scores(t, p)[:2] == pytest.approx((tp / same_p.sum(), tp / same_t.sum()))


def test_degenerate_partitions():
    assert cm.ari([0, 0, 0], [1, 1, 1]) == 1.0
    assert cm.nmi([0, 0, 0], [1, 1, 1]) == 1.0
    assert cm.pairwise_f1([0], [0]) == 1.0


@pytest.mark.parametrize(
    "a, b, exc, match",
    [
        ([0, 1], [0], ValueError, "length"),
        ([[0, 1]], [0, 1], ValueError, "1-D"),
        ([0.5, 1], [0, 1], TypeError, "integer"),
    ],
)
def test_bad_input(a, b, exc, match):
    with pytest.raises(exc, match=match):
        cm.ari(a, b)

import numpy as np
import pytest

from aas_core.sampling import uncertainty_regions
from aas_core.sampling.distribution import (
    aas_probabilities,
    region_variation_of_information,
    weighted_sample,
)


def vi_brute(a, b):
    n = len(a)

    def h(labels):
        _, c = np.unique(labels, return_counts=True, axis=0)
        p = c / n
        return -(p * np.log(p)).sum()

    return 2 * h(np.stack([a, b], 1)) - h(a) - h(b)


def test_vi_per_region_matches_the_definition():
    rng = np.random.default_rng(0)
    a, b = rng.integers(-1, 8, 300), rng.integers(-1, 8, 300)
    r = uncertainty_regions(a, b)
    vi = region_variation_of_information(r.region, r.labels_a, r.labels_b, r.n_regions)
    for k in range(r.n_regions):
        m = r.region == k
        assert vi[k] == pytest.approx(vi_brute(r.labels_a[m], r.labels_b[m]), abs=1e-12)


def test_probabilities_follow_eqs_4_to_6():
    us_region = np.array([0, 0, 1, 1, 1])
    us_kind = np.array([0, 0, 0, 1, 2])
    vi = np.array([1.0, 3.0])
    os_sim = np.array([0.5, 1.5])
    p = aas_probabilities(us_region, us_kind, os_sim, vi, eps=0.6)
    assert p.sum() == pytest.approx(1.0)
    # U_os: 0.6 split by similarity
    np.testing.assert_allclose(p[5:], [0.6 * 0.25, 0.6 * 0.75])
    # U_us: pi uniform over the 3 types; beta1 lives in both regions (rho 1/4, 3/4)
    np.testing.assert_allclose(
        p[:3], 0.4 * np.array([1 / 3 * 1 / 4 / 2, 1 / 3 * 1 / 4 / 2, 1 / 3 * 3 / 4])
    )
    np.testing.assert_allclose(p[3:5], 0.4 * np.array([1 / 3, 1 / 3]))


def test_an_empty_pool_gives_its_share_to_the_other():
    p = aas_probabilities(np.array([0, 1]), np.array([0, 0]), np.empty(0), np.array([0.0, 0.0]))
    np.testing.assert_allclose(p, [0.5, 0.5])  # VI all zero: uniform over regions
    p = aas_probabilities(
        np.empty(0, np.int64), np.empty(0, np.int64), np.array([1.0, 3.0]), np.zeros(0)
    )
    np.testing.assert_allclose(p, [0.25, 0.75])
    assert (
        aas_probabilities(
            np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), np.zeros(0)
        ).size
        == 0
    )


def test_custom_type_weights():
    p = aas_probabilities(
        np.array([0, 0]), np.array([0, 2]), np.empty(0), np.array([1.0]), pi=[1.0, 1.0, 0.0]
    )
    np.testing.assert_allclose(p, [1.0, 0.0])


def test_weighted_sample_without_replacement():
    rng = np.random.default_rng(0)
    prob = np.array([0.5, 0.3, 0.2, 0.0])
    assert weighted_sample(prob, 10, rng).tolist() == [0, 1, 2, 3]
    picks = np.array([weighted_sample(prob, 2, rng) for _ in range(4000)])
    assert (picks[:, 0] != picks[:, 1]).all() and not (picks == 3).any()
    # P(0 in a draw of 1) = 0.5
    first = np.array([weighted_sample(prob, 1, rng)[0] for _ in range(4000)])
    assert abs((first == 0).mean() - 0.5) < 0.03
    # seeded: reproducible
    a = weighted_sample(prob, 2, np.random.default_rng(7))
    np.testing.assert_array_equal(a, weighted_sample(prob, 2, np.random.default_rng(7)))

"""Magnitude pruning (onnx_dc.codec.prune) and 1-D k-means weight sharing (onnx_dc.codec.cluster)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onnx_dc.codec.cluster import INIT_METHODS, kmeans_1d
from onnx_dc.codec.prune import keep_count, prune_mask_by_fraction, prune_mask_by_threshold


@given(st.integers(1, 400), st.floats(0, 0.999), st.integers(0, 2**31))
def test_prune_keeps_exactly_the_largest(n, sparsity, seed):
    w = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    mask = prune_mask_by_fraction(w, sparsity)
    assert mask.sum() == keep_count(n, sparsity)
    if 0 < mask.sum() < n:
        assert np.abs(w[mask]).min() >= np.abs(w[~mask]).max()


def test_prune_ties_are_deterministic_and_exact():
    w = np.ones((4, 5), dtype=np.float32)
    mask = prune_mask_by_fraction(w, 0.75)
    assert mask.sum() == 5 and mask.ravel()[:5].all()


def test_prune_never_keeps_zeros():
    w = np.zeros(10, dtype=np.float32)
    w[3] = 1
    assert prune_mask_by_fraction(w, 0.0).sum() == 1


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_prune_rejects_bad_sparsity(bad):
    with pytest.raises(ValueError, match="sparsity"):
        prune_mask_by_fraction(np.ones(4, np.float32), bad)


def test_prune_by_threshold():
    w = np.array([-3, -1, 0.5, 2, 0.1], dtype=np.float32)
    assert prune_mask_by_threshold(w, 0.9).tolist() == [True, True, False, True, False]


@pytest.mark.parametrize("init", INIT_METHODS)
def test_kmeans_codebook_is_nearest_and_deterministic(init):
    v = np.random.default_rng(1).standard_normal(5000).astype(np.float32)
    a = kmeans_1d(v, 16, init=init, seed=7)
    b = kmeans_1d(v, 16, init=init, seed=7)
    assert np.array_equal(a.codebook, b.codebook) and np.array_equal(a.labels, b.labels)
    assert a.codebook.size <= 16 and np.all(np.diff(a.codebook) > 0)
    nearest = np.abs(v[:, None] - a.codebook[None, :]).argmin(axis=1)
    assert np.array_equal(a.labels, nearest)


def test_kmeans_converges_to_a_lloyd_fixed_point():
    v = np.random.default_rng(2).standard_normal(20000).astype(np.float32)
    c = kmeans_1d(v, 8)
    for j in range(c.codebook.size):  # each centroid is the mean of its cluster
        assert abs(v[c.labels == j].mean() - c.codebook[j]) < 1e-4


def test_kmeans_linear_init_beats_a_bad_codebook():
    v = np.random.default_rng(3).laplace(size=10000).astype(np.float32)
    c = kmeans_1d(v, 4)
    err = ((v - c.codebook[c.labels]) ** 2).mean()
    uniform = np.linspace(v.min(), v.max(), 4).astype(np.float32)
    err_uniform = ((v - uniform[np.abs(v[:, None] - uniform).argmin(1)]) ** 2).mean()
    assert err < err_uniform


def test_kmeans_few_distinct_values_are_exact():
    v = np.array([1, 2, 2, 3, 1], dtype=np.float32)
    c = kmeans_1d(v, 32)
    assert np.array_equal(c.codebook[c.labels], v)


def test_kmeans_empty_and_single():
    assert kmeans_1d(np.zeros(0, np.float32), 4).labels.size == 0
    c = kmeans_1d(np.array([5.0], np.float32), 4)
    assert c.codebook.tolist() == [5.0]


def test_kmeans_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown k-means"):
        kmeans_1d(np.arange(10, dtype=np.float32), 4, init="bogus")
    with pytest.raises(ValueError, match="NaN"):
        kmeans_1d(np.array([1, np.nan, 3], np.float32), 2)

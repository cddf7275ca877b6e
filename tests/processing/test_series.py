"""Series preprocessing (z-score, truncation, default rate) and token counts vs the tower."""

import numpy as np
import pytest
import torch

from opens1.config import get_preset
from opens1.common.paths import find_data
from opens1.models.timeseries import TimeSeriesTower
from opens1.processing.series import (
    default_sampling_rate,
    preprocess_series,
    read_wfdb,
    series_num_tokens,
    series_shape,
    series_tokens_or_zero,
)


def test_zscore_per_channel_and_shapes():
    rng = np.random.default_rng(0)
    raw = np.stack([rng.normal(5, 3, 1000), rng.normal(-2, 0.01, 1000)], axis=1)
    x, sr = preprocess_series(raw, 250.0)
    assert x.dtype == torch.float32 and x.shape == (1000, 2) and sr == 250.0
    torch.testing.assert_close(x.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0, unbiased=False), torch.ones(2), atol=1e-4, rtol=0)
    want = (raw - raw.mean(0)) / (raw.std(0) + 1e-8)
    np.testing.assert_allclose(x.numpy(), want, rtol=1e-5, atol=1e-5)
    # 1-D lists, tensors; constant channels stay finite (eps)
    x1, _ = preprocess_series([1.0, 2.0, 3.0, 4.0], 10)
    assert x1.shape == (4, 1)
    xc, _ = preprocess_series(torch.ones(50, 3), 10)
    assert torch.equal(xc, torch.zeros(50, 3))
    # channels-first input (JSON [[ch0...], [ch1...]]) is transposed to [T, C]
    xt, _ = preprocess_series(raw.T.tolist(), 250.0)
    torch.testing.assert_close(xt, x)
    x1b, _ = preprocess_series([[1.0, 2.0, 3.0, 4.0]], 10)
    torch.testing.assert_close(x1b, x1)


def test_truncation_happens_before_normalisation():
    raw = np.concatenate([np.zeros(100), np.full(100, 1000.0)])
    x, _ = preprocess_series(raw, 10.0, max_samples=100)
    assert x.shape == (100, 1) and torch.equal(x, torch.zeros(100, 1))
    long, _ = preprocess_series(np.random.default_rng(1).normal(size=250_000), 16000.0)
    assert long.shape == (240_000, 1)


def test_default_sampling_rate():
    for sr in (None, 0, -5.0, float("nan")):
        _, got = preprocess_series(np.arange(400.0), sr)
        assert got == 100.0
    _, got = preprocess_series(np.arange(3.0), None)
    assert got == 1.0 == default_sampling_rate(3)


def test_bad_values_raise():
    with pytest.raises(ValueError, match="NaN"):
        preprocess_series([1.0, float("nan")], 1.0)
    with pytest.raises(ValueError, match="empty"):
        preprocess_series([], 1.0)
    with pytest.raises(ValueError, match=r"\[T\]"):
        preprocess_series(np.zeros((2, 2, 2)), 1.0)
    with pytest.raises(ValueError):
        preprocess_series(["a", "b"], 1.0)
    with pytest.raises(FileNotFoundError):
        read_wfdb("/nonexistent/record")


def test_token_counts_table():
    cfg = get_preset("intern-s1").timeseries
    assert series_num_tokens(64000, 16000, cfg) == 100
    assert series_num_tokens(3000, 100, cfg) == 31
    assert series_num_tokens(240000, 360, cfg) == 441
    assert series_tokens_or_zero(10, 100) == 0
    counts = [series_num_tokens(t, 100.0, cfg) for t in range(49, 2000, 37)]
    assert counts == sorted(counts)  # monotone in length


def test_token_counts_equal_tower_output_over_rates_and_lengths():
    """The processor's count must be exactly what the tower emits (several rates and lengths,
    through preprocess_series, including the default-rate path)."""
    cfg = get_preset("debug").timeseries
    torch.manual_seed(0)
    tower = TimeSeriesTower(cfg).eval()
    tower.init_weights()
    rng = np.random.default_rng(0)
    cases = [(61, 20.0), (97, 0.5), (400, None), (1234, 100.0), (3000, 100.0), (2900, 360.0),
             (5000, 1000.0), (6400, 16000.0)]
    xs, srs = [], []
    for t, sr in cases:
        x, sr2 = preprocess_series(rng.normal(size=(t, 2)), sr)
        xs.append(x)
        srs.append(sr2)
    with torch.no_grad():
        outs = tower(xs, srs)
    for x, sr, o in zip(xs, srs, outs):
        assert o.shape[0] == series_num_tokens(x.shape[0], sr, cfg), (x.shape, sr)


def test_read_wfdb_mitbih_record():
    values, fs = read_wfdb(find_data(None, "timeseries/100.hea"), sampto=1000)
    assert values.shape == (1000, 2) and fs == 360.0
    # MLII lead of record 100 is in millivolts, roughly -0.5..1.5 mV
    assert -3 < values.min() < values.max() < 3
    one, _ = read_wfdb(find_data(None, "timeseries/100.hea").with_suffix(""), channels=[1], sampto=10)
    np.testing.assert_allclose(one[:, 0], values[:10, 1])


def test_series_shape_without_converting():
    assert series_shape([1.0, 2.0, 3.0]) == (3, 1)
    assert series_shape([[1.0, 2.0]] * 5) == (5, 2)
    # channels-first (more columns than rows) is read as preprocess_series reads it: transposed
    assert series_shape([[0.0] * 720, [1.0] * 720]) == (720, 2)
    assert series_shape(np.zeros((2, 720))) == (720, 2) == tuple(preprocess_series(np.random.rand(2, 720))[0].shape)
    assert series_shape(torch.zeros(10)) == (10, 1)
    for bad, msg in (([[1.0, 2.0], [3.0]], "same number"), ([[[1.0]]], "more than 2"), ([], "empty"), ([[]], "empty"),
                     (np.zeros((2, 2, 2)), r"\[T\] or \[T, C\]"), ("abc", "list")):
        with pytest.raises(ValueError, match=msg):
            series_shape(bad)

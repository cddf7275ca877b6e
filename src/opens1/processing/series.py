"""Time-series preprocessing for the time-series tower, and its token arithmetic.

    raw values ([T] or [T, C], list / numpy / torch) + sampling rate
      -> preprocess_series: float32 [T, C], per-channel z-score over time (eps 1e-8),
         truncated to max_samples (240,000), sampling rate defaulted when missing
      -> series_num_tokens(T, sr, cfg): how many <TS_CONTEXT> tokens the tower will emit

Design choices
- The rules are lmdeploy's Intern-S1-Pro processor (lmdeploy vl/model/interns1_pro.py): truncate first, then
  z-score with the population std, so every model input has the same scale whatever the
  sensor units. A missing or non-positive rate becomes max(T/4, 1), the reference default.
- The token count is not re-derived here: it calls the tower's own geometry functions
  (models/timeseries.py), so prompt expansion and the tower can never disagree.
- Cost before conversion: the tower's work grows with length x channels while its token
  count grows with length only, so a server budgets values, not tokens. `series_shape`
  gives (T, C) of nested lists without converting them (a server refuses a request over
  MAX_SERIES_VALUES values before any array is built; `serve/prepare.py`).
- `read_wfdb` reads PhysioNet WFDB records (e.g. MIT-BIH) with the `wfdb` library.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from opens1.config import TimeSeriesConfig
from opens1.models.timeseries import check_length, num_tokens

MAX_SAMPLES = 240_000
MAX_SERIES_VALUES = 1_000_000  # length x channels per request, the server's default budget
EPS = 1e-8


def default_sampling_rate(num_samples: int) -> float:
    return max(num_samples / 4.0, 1.0)


def preprocess_series(x, sampling_rate: float | None = None, max_samples: int = MAX_SAMPLES) -> tuple[torch.Tensor, float]:
    """Values -> (FloatTensor[T, C], sampling rate).

    A 1-D series becomes [T, 1]; a 2-D one with fewer rows than columns is read as
    channels-first [C, T] and transposed. NaN/inf values, empty input or more than 2
    dimensions are a ValueError. Channels are z-scored independently over time after
    truncation."""
    if isinstance(x, torch.Tensor):
        arr = x.detach().to("cpu", torch.float64).numpy()
    else:
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"time series values must be numbers in a [T] or [T, C] array: {e}") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"a time series must be [T] or [T, C], got shape {arr.shape}")
    if arr.shape[0] < arr.shape[1]:
        # more channels than samples: it was written channels-first (JSON's [[ch0...], [ch1...]])
        arr = arr.T
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"time series is empty (shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise ValueError("time series contains NaN or infinite values")
    if max_samples is not None and max_samples > 0:
        arr = arr[:max_samples]
    mean = arr.mean(axis=0, keepdims=True)
    std = arr.std(axis=0, keepdims=True)
    arr = (arr - mean) / (std + EPS)
    t = arr.shape[0]
    sr = float(sampling_rate) if sampling_rate is not None else 0.0
    if not np.isfinite(sr) or sr <= 0:
        sr = default_sampling_rate(t)
    return torch.from_numpy(arr.astype(np.float32)), sr


def series_shape(x) -> tuple[int, int]:
    """(T, C) that preprocess_series will see (before truncation), read from the outer
    lengths only: a flat list is (T, 1), and channels-first data is transposed by the same
    rule. Ragged rows or more than 2 dimensions are a ValueError. Cheap on nested lists."""
    if isinstance(x, (np.ndarray, torch.Tensor)):
        shape = tuple(x.shape)
        if len(shape) == 1:
            shape = (shape[0], 1)
        if len(shape) != 2:
            raise ValueError(f"a time series must be [T] or [T, C], got shape {shape}")
        rows, cols = shape
    else:
        if not isinstance(x, (list, tuple)):
            raise ValueError(f"time series values must be a [T] or [T, C] list, got {type(x).__name__}")
        rows = len(x)
        if rows and isinstance(x[0], (list, tuple)):
            cols = len(x[0])
            if any(not isinstance(r, (list, tuple)) or len(r) != cols for r in x):
                raise ValueError("every sample of a time series must have the same number of channels")
            if any(isinstance(r[0], (list, tuple)) for r in x if r):
                raise ValueError("a time series must be [T] or [T, C], got more than 2 dimensions")
        else:
            cols = 1
    if rows == 0 or cols == 0:
        raise ValueError(f"time series is empty (shape {(rows, cols)})")
    return (cols, rows) if rows < cols else (rows, cols)


def series_num_tokens(num_samples: int, sampling_rate: float, ts_cfg: TimeSeriesConfig | None = None) -> int:
    """Exactly how many tokens TimeSeriesTower emits for a [num_samples, C] series at this rate;
    a ValueError if the series is too short for one token."""
    base = ts_cfg.stride_base if ts_cfg is not None else 160
    return check_length(int(num_samples), float(sampling_rate), base)


def series_tokens_or_zero(num_samples: int, sampling_rate: float, ts_cfg: TimeSeriesConfig | None = None) -> int:
    """Like series_num_tokens but 0 (no error) for a series that is too short."""
    base = ts_cfg.stride_base if ts_cfg is not None else 160
    return num_tokens(int(num_samples), float(sampling_rate), base)


def read_wfdb(path: str | Path, channels: list[int] | None = None,
              sampfrom: int = 0, sampto: int | None = None) -> tuple[np.ndarray, float]:
    """A WFDB record (path without extension, e.g. '.../timeseries/100') -> (float [T, C]
    physical values, sampling rate in Hz)."""
    import wfdb

    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".hea", ".dat", ".atr") else path
    if not base.with_suffix(".hea").is_file():
        raise FileNotFoundError(f"no WFDB header {str(base)!r}.hea")
    rec = wfdb.rdrecord(str(base), channels=channels, sampfrom=sampfrom, sampto=sampto)
    if rec.p_signal is None:
        raise ValueError(f"WFDB record {str(base)!r} has no physical signal")
    return np.asarray(rec.p_signal, dtype=np.float64), float(rec.fs)

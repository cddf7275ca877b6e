"""ECG beat classification on MIT-BIH Arrhythmia record 100 (real PhysioNet data).

A case is one annotated beat: the prompt is a chat message whose content holds
the signal window as a time-series part (`{"values": [T, 2] (MLII, V5 in mV),
"sampling_rate": 360}`, the processor's format) plus the question; the answer is
the beat label: N (normal), A (atrial premature) or V (premature ventricular).

Splits: beats are grouped into one-minute blocks of the recording and a block is
held out when hash(block) % 10 == 0; windows that would cross a block boundary
are dropped, so no held-out signal sample is ever shown in training.
Record 100 is ~98% normal beats, so N beats are subsampled to 4 per abnormal beat
per split (a constant "N" policy would otherwise score 98%).
Difficulty is context length: easy shows 4 s (several neighbour beats and RR
intervals), medium 3 s, hard 2 s around the beat; 2 s is the floor because the
series tower spends ~0.8 s of signal per token at 360 Hz.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np

from opens1.common.paths import find_data, has_data
from opens1.envs.base import DIFFICULTIES, ItemEnv, is_heldout

RECORD = "timeseries/100"
FS = 360
BLOCK = 60 * FS  # one minute of samples
LABELS = {"N": "normal beat", "A": "atrial premature beat", "V": "premature ventricular contraction"}
_WINDOW_S = {"easy": 4.0, "medium": 3.0, "hard": 2.0}  # >= 2 s: the series tower needs ~0.8 s per token at 360 Hz
_N_PER_ABNORMAL = 4


@lru_cache(maxsize=2)
def _record(root):
    path = str(find_data(root, RECORD + ".hea"))[: -len(".hea")]
    with warnings.catch_warnings():  # wfdb trips pandas deprecation warnings; not ours to fix
        warnings.simplefilter("ignore")
        import wfdb  # only this environment needs it

        rec = wfdb.rdrecord(path)
        ann = wfdb.rdann(path, "atr")
    return np.asarray(rec.p_signal, dtype=np.float32), np.asarray(ann.sample), list(ann.symbol)


@lru_cache(maxsize=2)
def _ecg_split(root) -> dict:
    signal, samples, symbols = _record(root)
    half = int(max(_WINDOW_S.values()) * FS / 2)
    out = {"train": [], "heldout": []}
    for diff in DIFFICULTIES:
        beats = {"train": {"N": [], "X": []}, "heldout": {"N": [], "X": []}}
        for pos, sym in zip(samples, symbols):
            if sym not in LABELS:
                continue
            block = pos // BLOCK
            # The widest window must stay inside the beat's block (no cross-split signal).
            if pos - half < block * BLOCK or pos + half >= min((block + 1) * BLOCK, len(signal)):
                continue
            split = "heldout" if is_heldout(f"mitdb100|block{block}") else "train"
            beats[split]["N" if sym == "N" else "X"].append((int(pos), sym))
        for split, groups in beats.items():
            n_keep = max(_N_PER_ABNORMAL * len(groups["X"]), 8)
            step = max(1, len(groups["N"]) // n_keep)
            chosen = sorted(groups["X"] + groups["N"][::step][:n_keep])
            out[split] += [{"key": f"mitdb100|{pos}|{diff}", "split_key": f"mitdb100|block{pos // BLOCK}",
                            "pos": pos, "label": sym, "difficulty": diff} for pos, sym in chosen]
    return out


class ECGBeatEnv(ItemEnv):
    name, domain, kind = "ecg/beat_label", "ecg", "choice"  # "Answer: V (PVC)" -> V

    @classmethod
    def available(cls, data_root=None):
        return has_data(data_root, RECORD + ".hea") and has_data(data_root, RECORD + ".dat")

    def _load(self):
        return _ecg_split(self.data_root)

    def window(self, pos: int, difficulty: str) -> list[list[float]]:
        signal, _, _ = _record(self.data_root)
        half = int(_WINDOW_S[difficulty] * FS / 2)
        win = signal[pos - half:pos + half]  # [T, 2] in mV
        return np.round(win.astype(np.float64), 3).tolist()

    def _build(self, item, split, index):
        options = "; ".join(f"{k} = {v}" for k, v in LABELS.items())
        text = (f"This is a {_WINDOW_S[item['difficulty']]:g} s two-lead ECG (MLII, V5; mV) centred on one beat. "
                f"Classify the centre beat ({options}). End your response with a final line of the form "
                f"'Answer: <N, A or V>'.")
        content = [{"type": "time_series",
                    "time_series": {"values": self.window(item["pos"], item["difficulty"]), "sampling_rate": FS}},
                   {"type": "text", "text": text}]
        return self._make_case(split, index, item["key"], [{"role": "user", "content": content}], item["label"],
                               item["difficulty"], source="mitdb/100", sample=item["pos"])

    def sft_response(self, case):
        return f"The centre beat's morphology and timing match a {LABELS[case.reference]}.\nAnswer: {case.reference}"


# the environments this module contributes to the registry (opens1.envs.registry)
ENVS = (ECGBeatEnv,)

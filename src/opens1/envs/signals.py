"""Signal-processing environments on generated sensor traces (time-series prompts).

`physics/signal_frequency`: a 4 s trace sampled at 100 Hz holds one oscillation at an
integer frequency of 1-6 Hz under a slow baseline wander and white noise; the question
is the dominant frequency in Hz, which a physicist reads off a periodogram (and the
reference is checked against one: `dominant_frequency`). The answer classes are drawn in
turn, so every split holds every frequency equally often and a constant answer scores 1/6.
Difficulty is the noise level.

The trace is a time-series part of the prompt (`{"values": [T], "sampling_rate": 100}`,
the processor's format); at 100 Hz the time-series tower turns 400 samples into 4 tokens.
"""

from __future__ import annotations

import numpy as np

from opens1.envs.base import ANSWER_FORMAT, ProceduralEnv

FS = 50.0  # Hz
SECONDS = 8.0
FREQUENCIES = (1, 2, 3, 4, 5, 6)  # Hz: at least 4 full cycles in the window, >= 16 samples per cycle
_NOISE = {"easy": 0.1, "medium": 0.3, "hard": 0.6}  # white-noise std / oscillation amplitude


def dominant_frequency(values, fs: float) -> float:
    """The frequency (Hz) of the largest periodogram peak above 0.75 Hz (below it: the wander)."""
    x = np.asarray(values, dtype=np.float64)
    x = x - x.mean()
    power = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / fs)
    band = freqs > 0.75
    return float(freqs[band][np.argmax(power[band])])


class SignalFrequencyEnv(ProceduralEnv):
    name, domain, kind = "physics/signal_frequency", "physics", "number"
    verify_options = {"rel_tol": 0.0, "abs_tol": 1e-9, "unit": "Hz"}
    answer_classes = FREQUENCIES

    def _generate(self, rng, difficulty, target=None):
        f = target if target is not None else rng.choice(FREQUENCIES)
        amp = rng.uniform(0.5, 2.0)
        phase = rng.uniform(0.0, 2 * np.pi)
        wander_f, wander_amp = rng.uniform(0.1, 0.4), amp * rng.uniform(0.0, 0.4)
        offset = rng.uniform(-1.0, 1.0)
        noise = _NOISE[difficulty] * amp
        seed = rng.randrange(1 << 30)
        t = np.arange(int(SECONDS * FS)) / FS
        x = (amp * np.sin(2 * np.pi * f * t + phase) + wander_amp * np.sin(2 * np.pi * wander_f * t)
             + offset + np.random.default_rng(seed).normal(0.0, noise, t.shape))
        values = np.round(x, 3).tolist()
        text = (f"This is a {SECONDS:g} s sensor trace sampled at {FS:g} Hz. What is the frequency of its "
                f"dominant oscillation, in Hz? " + ANSWER_FORMAT.format(what="integer in Hz"))
        prompt = [{"role": "user", "content": [
            {"type": "time_series", "time_series": {"values": values, "sampling_rate": FS}},
            {"type": "text", "text": text}]}]
        key = f"{f}|{amp:.4f}|{phase:.4f}|{wander_f:.4f}|{wander_amp:.4f}|{offset:.4f}|{difficulty}|{seed}"
        return key, prompt, f"{f} Hz", {"frequency": f}

    def sft_response(self, case):
        return f"Answer: {case.meta['frequency']} Hz"


# the environments this module contributes to the registry (opens1.envs.registry)
ENVS = (SignalFrequencyEnv,)

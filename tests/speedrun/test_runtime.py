"""The run's process: its start time and its thread count."""

import os

import torch

from opens1.speedrun import runtime


def test_process_age_counts_the_interpreter_start():
    age = runtime.process_age()
    assert 0.0 < age < 24 * 3600  # this test process has been running for a while


def test_threads_are_chosen_by_measurement():
    before = torch.get_num_threads()
    try:
        n, ratio = runtime.pick_threads(trials=1, seconds=0.02)
        assert n in (1, os.cpu_count()) and ratio > 0 and torch.get_num_threads() == n
        assert (n > 1) == (ratio >= 1.3) or os.cpu_count() == 1
    finally:
        torch.set_num_threads(before)

"""The speedrun's budget (Clock) and the parsers of --steps and --set."""

import pytest

from opens1.speedrun import config


def test_clock_shares_and_reserve(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(config.time, "perf_counter", lambda: now[0])
    clock = config.Clock(10, start=90.0)  # the process started 10 s ago
    assert clock.elapsed() == 10.0 and clock.left() == 590.0
    assert clock.reserve == pytest.approx(6.0 + 0.02 * 600)
    todo = ["sft", "rl", "eval"]
    total = sum(clock.share(s, todo) for s in todo)
    assert total == pytest.approx(590.0 - clock.reserve)  # everything but the reserve is handed out
    assert clock.share("sft", todo) / clock.share("eval", todo) == pytest.approx(
        config.STAGE_SHARE["sft"] / config.STAGE_SHARE["eval"])
    now[0] = 1000.0  # over budget: nothing left to hand out
    assert clock.left() == 0.0 and clock.share("sft", todo) == 0.0


def test_fixed_work_and_setting_parsers():
    assert config.parse_steps("sft=300,rl=20") == {"sft": 300, "rl": 20}
    n = config.parse_steps("1000")
    assert n["sft"] == 1000 and n["rl"] == round(1000 * config.STAGE_SHARE["rl"] / config.STAGE_SHARE["sft"])
    assert config.parse_steps("") == {}
    for bad in ("sft=0", "eval=3", "sft=x"):
        with pytest.raises(ValueError, match="--steps"):
            config.parse_steps(bad)
    assert config.parse_sets(["sft.lr=1e-3", "sft.warmup_steps=7"]) == {"sft": {"lr": 1e-3, "warmup_steps": 7}}
    assert config.parse_sets(["rl.lr=3e-5", "rl.entropy_control=none"]) == {"rl": {"lr": 3e-5, "entropy_control": "none"}}
    for bad in (["rl.no_such_field=1"], ["eval.items=3"]):
        with pytest.raises(ValueError):
            config.parse_sets(bad)
    with pytest.raises(ValueError):
        config.parse_sets(["sft.no_such_field=1"])

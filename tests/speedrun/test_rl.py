"""RL's task choice, its configs and its loop."""

from opens1.rl.trainer import RLResult
from opens1.speedrun import rl


def test_rl_runs_only_where_sft_beats_the_prior():
    probe = {"a": {"score": 0.6, "above_prior": 0.30, "stderr": 0.05},
             "b": {"score": 0.35, "above_prior": 0.05, "stderr": 0.05},  # within noise of its prior
             "c": {"score": 0.2, "above_prior": -0.1, "stderr": 0.05},
             "e": {"score": 0.99, "above_prior": 0.8, "stderr": 0.02}}  # solved: nothing left for RL
    assert rl.choose_rl_envs(probe, ["a", "b", "c", "d", "e"]) == ["a"]
    probe["f"] = {"score": 0.8, "above_prior": 0.55, "stderr": 0.04}  # both mostly right: the one with most room
    probe["g"] = {"score": 0.55, "above_prior": 0.3, "stderr": 0.04}
    assert rl.choose_rl_envs(probe, ["a", "f", "g", "e"]) == ["g"]
    probe["h"] = {"score": 0.45, "above_prior": 0.3, "stderr": 0.04}  # none mostly right: the furthest along
    assert rl.choose_rl_envs(probe, ["b", "h", "e"]) == ["h"]
    assert rl.choose_rl_envs(probe, ["b", "c", "e"]) == []


def test_rl_loop_stops_at_its_steps_and_logs_progress(capsys):
    class Fake:
        def __init__(self):
            self.result = RLResult()

        def step(self):
            self.result.steps += 1
            return {"reward_mean": 0.5, "kept_groups": 8, "drawn_prompts": 16, "entropy": 0.1}

    fake = Fake()
    res = rl.rl_loop(fake, steps=5, seconds=None, every=0.0)
    assert res.steps == 5 and res.seconds >= 0
    assert capsys.readouterr().err.count("kept groups 8/16") == 5
    assert rl.rl_loop(Fake(), steps=None, seconds=0.0).steps == 0  # no time: no step


def test_rl_settings_reach_the_config_and_its_loss():
    cfg = rl.rl_configs({"lr": 3e-5, "entropy_control": "none"}, envs=["chem/ring_count"], lr=1e-4)
    assert cfg.lr == 3e-5 and cfg.loss.entropy_control == "none" and cfg.envs == ["chem/ring_count"]

import pytest

from opens1.train.config import TrainConfig, apply_overrides, config_diff, get_train_preset, stage_presets


def test_presets_follow_the_recipe():
    assert set(stage_presets()) == {"pretrain", "multimodal", "sft"}
    assert get_train_preset("multimodal").loss_reduction == "square"  # Intern-S1 §3.3
    assert get_train_preset("pretrain").schedule == "wsd"
    assert get_train_preset("sft", lr=1e-4).lr == 1e-4


def test_overrides_are_typed():
    cfg = apply_overrides(TrainConfig(), ["lr=1e-3", "seq_len=64", "activation_checkpointing=true",
                                          "init_from=none", "freeze=vision,router", "max-seconds=2.5"])
    assert cfg.lr == 1e-3 and cfg.seq_len == 64 and cfg.activation_checkpointing is True
    assert cfg.init_from is None and cfg.freeze_list == ["vision", "router"] and cfg.max_seconds == 2.5


@pytest.mark.parametrize("bad", ["nonsense=1", "lr", "seq_len=abc", "progress=maybe"])
def test_bad_overrides_are_clear_errors(bad):
    with pytest.raises(ValueError):
        apply_overrides(TrainConfig(), [bad])


def test_validation():
    with pytest.raises(ValueError, match="stage"):
        TrainConfig(stage="rl")
    with pytest.raises(ValueError, match="freeze"):
        TrainConfig(freeze="wings")
    with pytest.raises(KeyError):
        get_train_preset("nope")


def test_config_diff_ignores_resume_safe_fields():
    a = TrainConfig().to_dict()
    b = TrainConfig(out_dir="elsewhere", max_steps=999, lr=1.0).to_dict()
    assert config_diff(a, b) == {"lr": (a["lr"], 1.0)}
    assert TrainConfig.from_dict(a) == TrainConfig()

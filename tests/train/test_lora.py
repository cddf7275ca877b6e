"""Freezing and LoRA: starts at the base model, trains only the adapters, merges exactly."""

import pytest
import torch

from opens1.data.packing import PackedStream
from opens1.train.lora import LoRALinear, apply_lora, freeze, merge_lora, merged_state_dict, trainable_parameters
from opens1.train.trainer import train


def test_lora_linear_starts_at_base_and_merges():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    x = torch.randn(3, 6)
    ref = base(x)
    lora = LoRALinear(base, r=2, alpha=4.0)
    assert torch.equal(lora(x), ref)  # B = 0: exactly the base model at the start
    with torch.no_grad():
        lora.lora_B.normal_()
    expected = ref + (x @ lora.lora_A.T @ lora.lora_B.T) * 2.0
    assert torch.allclose(lora(x), expected, atol=1e-6)
    holder = torch.nn.Sequential(lora)
    merge_lora(holder)
    assert type(holder[0]) is torch.nn.Linear and torch.allclose(holder[0](x), expected, atol=1e-5)


def test_freeze_parts(tokenizer, h):
    model = h.make_model(tokenizer)
    n = freeze(model, ["vision", "projector", "router"])
    assert n > 0
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert all(name.startswith(("vision_tower", "multi_modal_projector")) or name.endswith("mlp.gate.weight")
               for name in frozen)
    assert any(name.endswith("mlp.gate.weight") for name in frozen)
    with pytest.raises(ValueError):
        freeze(model, ["wings"])


def test_lora_trains_only_adapters_and_exports_merged(tokenizer, text_docs, h, tmp_path):
    model = h.make_model(tokenizer)
    _, total = trainable_parameters(model)
    n = apply_lora(model, ["q_proj", "v_proj"], r=4)
    trainable, total2 = trainable_parameters(model)
    assert n == 2 * model.config.text.num_hidden_layers and total2 > total
    assert trainable == sum(4 * (lin.in_features + lin.out_features) for lin in model.modules()
                            if isinstance(lin, LoRALinear))
    base = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    cfg = h.small_cfg(tmp_path, max_steps=3, lr=1e-2, warmup_steps=1)
    train(model, cfg, PackedStream(text_docs, cfg.seq_len, cfg.micro_batch_size), tmp_path)
    after = model.state_dict()
    assert all(torch.equal(base[k], after[k]) for k in base)  # frozen base weights untouched
    merged = merged_state_dict(model)
    assert not any("lora_" in k for k in merged)
    q = "language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged[q], base[q])  # the adapters learned something and were folded in

"""Freezing and LoRA: starts at the base model, trains only the adapters, merges exactly."""

import pytest
import torch

from opens1.data.packing import PackedStream
from opens1.train.lora import add_lora, apply_lora, freeze, lora_layers, merge_lora, merged_state_dict, trainable_parameters
from opens1.train.trainer import train


def test_lora_starts_at_base_and_merges():
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 5)
    x = torch.randn(3, 6)
    ref = lin(x)
    lora = add_lora(lin, r=2, alpha=4.0)
    assert torch.equal(lin(x), ref)  # B = 0: exactly the base model at the start
    # a direct read of .weight (as the model's fused projections do) sees the update too
    with torch.no_grad():
        lora.lora_B.normal_()
    expected = ref + (x @ lora.lora_A.T @ lora.lora_B.T) * 2.0
    assert torch.allclose(torch.nn.functional.linear(x, lin.weight, lin.bias), expected, atol=1e-6)
    holder = torch.nn.Sequential(lin)
    assert merge_lora(holder) == 1
    assert set(dict(holder.named_parameters())) == {"0.weight", "0.bias"}
    assert torch.allclose(holder[0](x), expected, atol=1e-5)


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
    # the attention projections, whatever the model names them (fused qkv_proj or q/k/v_proj)
    n = apply_lora(model, ["qkv_proj", "q_proj", "k_proj", "v_proj", "o_proj"], r=4)
    trainable, total2 = trainable_parameters(model)
    layers = lora_layers(model)
    per_layer = sum(k.startswith("language_model.layers.0.self_attn.") for k in layers)
    assert per_layer >= 2 and n == per_layer * model.config.text.num_hidden_layers and total2 > total
    assert all(k.startswith("language_model.") for k in layers)  # scope: the decoder only
    assert trainable == sum(l.lora_A.numel() + l.lora_B.numel() for l in layers.values())
    base = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    assert base  # the frozen originals (".parametrizations.weight.original" for adapted layers)
    cfg = h.small_cfg(tmp_path, max_steps=3, lr=1e-2, warmup_steps=1)
    train(model, cfg, PackedStream(text_docs, cfg.seq_len, cfg.micro_batch_size), tmp_path)
    after = model.state_dict()
    assert all(torch.equal(base[k], after[k]) for k in base)  # frozen base weights untouched
    merged = merged_state_dict(model)
    assert not any("lora_" in k or "parametrizations" in k for k in merged)
    assert set(merged) == set(h.make_model(tokenizer).state_dict())  # the original keys
    q = "language_model.layers.0.self_attn.o_proj.weight"
    orig = "language_model.layers.0.self_attn.o_proj.parametrizations.weight.original"
    assert not torch.equal(merged[q], base[orig])  # the adapters learned something and were folded in

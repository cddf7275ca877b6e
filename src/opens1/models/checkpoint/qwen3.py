"""Qwen3 / Qwen3-MoE (Qwen3ForCausalLM, Qwen3MoeForCausalLM: model.*, lm_head.*), and the
tensors of the Qwen3 decoder that every layout shares: HF's separate q/k/v and gate/up
projections and per-expert weights become our fused qkv_proj, gate_up_proj and stacked
[experts, ...] tensors on the way in, and are split again on the way out."""

from __future__ import annotations

import re

import torch

from opens1.config import S1Config
from opens1.models.checkpoint.configs import parse_text_config
from opens1.models.checkpoint.layout import ROTARY_IGNORE, ExportTransform, Layout, Piece, Transform


def _expert_piece(m: re.Match, cfg: S1Config) -> list[Piece]:
    base, e, which = m.group(1), int(m.group(2)), m.group(3)
    inter = cfg.text.moe_intermediate_size
    if which == "gate":
        return [Piece(f"{base}.gate_up_proj", (e, slice(0, inter)))]
    if which == "up":
        return [Piece(f"{base}.gate_up_proj", (e, slice(inter, 2 * inter)))]
    return [Piece(f"{base}.down_proj", (e,))]


def _qkv_rows(cfg: S1Config) -> dict[str, slice]:
    t = cfg.text
    q, kv = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    return {"q": slice(0, q), "k": slice(q, q + kv), "v": slice(q + kv, q + 2 * kv)}


def _qkv_piece(m: re.Match, cfg: S1Config) -> list[Piece]:
    # HF q_proj / k_proj / v_proj -> row blocks of our fused qkv_proj
    return [Piece(f"{m.group(1)}.qkv_proj.{m.group(3)}", (_qkv_rows(cfg)[m.group(2)],))]


def _gate_up_piece(m: re.Match, cfg: S1Config) -> list[Piece]:
    # dense SwiGLU: HF gate_proj / up_proj -> halves of our fused gate_up_proj
    inter = cfg.text.intermediate_size
    rows = slice(0, inter) if m.group(2) == "gate" else slice(inter, 2 * inter)
    return [Piece(f"{m.group(1)}.gate_up_proj.weight", (rows,))]


TEXT_TRANSFORMS: list[Transform] = [
    (r"^(language_model\.layers\.\d+\.mlp\.experts)\.(\d+)\.(gate|up|down)_proj\.weight$", _expert_piece),
    (r"^(language_model\.layers\.\d+\.self_attn)\.(q|k|v)_proj\.(weight|bias)$", _qkv_piece),
    (r"^(language_model\.layers\.\d+\.mlp)\.(gate|up)_proj\.weight$", _gate_up_piece),
]


def _export_experts(name: str, w: torch.Tensor, cfg: S1Config) -> list[tuple[str, torch.Tensor]]:
    base, kind = name.rsplit(".", 1)
    out = []
    for e in range(w.shape[0]):  # w: [experts, 2 * inter, hidden] or [experts, hidden, inter]
        if kind == "gate_up_proj":
            gate, up = w[e].chunk(2, dim=0)
            out += [(f"{base}.{e}.gate_proj.weight", gate), (f"{base}.{e}.up_proj.weight", up)]
        else:
            out.append((f"{base}.{e}.down_proj.weight", w[e]))
    return out


def _export_qkv(name: str, w: torch.Tensor, cfg: S1Config) -> list[tuple[str, torch.Tensor]]:
    base, kind = name.rsplit(".qkv_proj.", 1)
    return [(f"{base}.{p}_proj.{kind}", w[rows]) for p, rows in _qkv_rows(cfg).items()]


def _export_gate_up(name: str, w: torch.Tensor, cfg: S1Config) -> list[tuple[str, torch.Tensor]]:
    base = name.rsplit(".gate_up_proj.", 1)[0]
    gate, up = w.chunk(2, dim=0)
    return [(f"{base}.gate_proj.weight", gate), (f"{base}.up_proj.weight", up)]


TEXT_EXPORT_TRANSFORMS: list[ExportTransform] = [
    (r"^language_model\..*\.mlp\.experts\.(gate_up_proj|down_proj)$", _export_experts),
    (r"^language_model\..*\.self_attn\.qkv_proj\.(weight|bias)$", _export_qkv),
    (r"^language_model\..*\.mlp\.gate_up_proj\.weight$", _export_gate_up),
]


def _parse_qwen3(d: dict) -> S1Config:
    return S1Config(text=parse_text_config(d, "top level"), vision=None, timeseries=None,
                    name=d.get("_name_or_path") or d["model_type"])


LAYOUT = Layout(
    "qwen3", model_types=("qwen3", "qwen3_moe"), parse=_parse_qwen3,
    renames=[(r"^model\.", "language_model."), (r"^lm_head\.", "lm_head.")],
    transforms=TEXT_TRANSFORMS, ignore=ROTARY_IGNORE,
)

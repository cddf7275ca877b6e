"""Typed configs for the Intern-S1 model family, and named presets.

    S1Config
      text: TextConfig              Qwen3 decoder, dense or MoE (every S1 model has one)
      vision: VisionConfig | None   InternViT tower + pixel-shuffle projector
      timeseries: TimeSeriesConfig | None   Intern-S1-Pro's time-series tower (optional)

Presets (`get_preset(name)`), from a 2-core laptop to the real checkpoints:
    intern-s1        Qwen3-235B-A22B MoE + InternViT-6B       (~240.7B parameters)
    intern-s1-mini   Qwen3-8B dense + InternViT-300M          (~8.5B)
    tiny             MoE S1 with vision and time series, for CPU training and tests (its own
                     small tokenizer, tied embeddings: `opens1 speedrun` trains it)
    tiny-dense       the same with a dense decoder
    debug            the smallest thing that exercises every code path
    s1-100m          a ~100M MoE S1 for single-GPU throughput checks

Field names follow the HF configs (transformers' Qwen3/Qwen3-MoE/InternS1) so that
checkpoint configs map onto them one to one; `opens1.models.checkpoint` does the
parsing of the different spellings found in the wild.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TextConfig:
    vocab_size: int = 153216
    hidden_size: int = 4096
    intermediate_size: int = 12288  # dense SwiGLU width
    num_hidden_layers: int = 36
    num_attention_heads: int = 32
    num_key_value_heads: int = 8  # GQA
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_scaling: dict | None = None  # HF-style, e.g. {"rope_type": "yarn", "factor": 4.0, ...}
    max_position_embeddings: int = 40960
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    # MoE (num_experts == 0 means dense)
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = True
    decoder_sparse_step: int = 1
    mlp_only_layers: list[int] = field(default_factory=list)
    router_aux_loss_coef: float = 0.001
    # special ids (Qwen3 / Intern-S1 defaults)
    bos_token_id: int | None = 151643
    eos_token_id: int | list[int] | None = 151645
    pad_token_id: int | None = None
    initializer_range: float = 0.02

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def is_moe_layer(self, i: int) -> bool:
        """Qwen3-MoE's rule: MoE unless listed in mlp_only_layers, every `decoder_sparse_step`-th layer."""
        return (
            self.is_moe
            and i not in self.mlp_only_layers
            and self.decoder_sparse_step > 0
            and (i + 1) % self.decoder_sparse_step == 0
        )


@dataclass
class VisionConfig:
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    image_size: int = 448  # square tiles; HF configs write [448, 448]
    patch_size: int = 14
    num_channels: int = 3
    norm_type: str = "layer_norm"  # "rms_norm" (InternViT-6B) or "layer_norm" (300M)
    layer_norm_eps: float = 1e-6
    use_qk_norm: bool = False  # RMSNorm over the full width, before splitting heads
    attention_bias: bool = True  # q/k/v bias (the output projection always has one)
    layer_scale_init_value: float = 0.1
    hidden_act: str = "gelu"  # exact erf GELU
    # image tiling (InternVL dynamic_preprocess)
    min_tiles: int = 1
    max_tiles: int = 12
    use_thumbnail: bool = True

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass
class TimeSeriesConfig:
    """Intern-S1-Pro's time-series tower (lmdeploy's interns1_pro_time_series.py): adaptive patch
    embedding, then a Whisper-style encoder, then a projector into the LM."""

    patch_dim: int = 128  # Conv1d(1 -> patch_dim) per patch and channel
    patch_heads: int = 8
    patch_ffn_dim: int = 2048
    embed_dim: int = 256  # after concat-subsample x2
    num_mel_bins: int = 80  # Linear(embed_dim -> 80) feeds the Whisper convs
    d_model: int = 768
    encoder_layers: int = 17  # as lmdeploy's Intern-S1-Pro tower (whisper-small widths, 17 layers, 8 heads)
    encoder_attention_heads: int = 8
    encoder_ffn_dim: int = 3072
    max_source_positions: int = 1500
    output_dim: int = 1024  # adapt_out
    stride_base: int = 160  # stride = floor(stride_base / (1 + exp(-sr/100))**6)
    max_samples: int = 240_000
    patch_max_len: int = 20000  # rows of the fixed sinusoidal table `encoder_embed.pos_encoder.pe`
    patch_dropout: float = 0.1  # nn.TransformerEncoderLayer's default, as the reference trains
    # The reference code reshapes [patches, L, C] -> [patches*C, 1, L] without a transpose, which
    # mixes channels for C > 1. False = true per-channel patches (the documented intent);
    # True reproduces checkpoints trained with that reshape.
    interleaved_channels: bool = False


@dataclass
class S1Config:
    text: TextConfig = field(default_factory=TextConfig)
    vision: VisionConfig | None = None
    timeseries: TimeSeriesConfig | None = None
    downsample_ratio: float = 0.5
    projector_hidden_act: str = "gelu"
    image_token_id: int = 152957  # <IMG_CONTEXT>; transformers' InternS1Config default (151667) is wrong for S1
    ts_token_id: int = 152973
    model_type: str = "interns1"
    name: str = "custom"

    @property
    def image_tokens_per_tile(self) -> int:
        if self.vision is None:
            return 0
        return int(self.vision.num_patches * self.downsample_ratio**2)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "S1Config":
        d = dict(d)
        text = TextConfig(**_known(TextConfig, d.pop("text", {})))
        vision = d.pop("vision", None)
        ts = d.pop("timeseries", None)
        return cls(
            text=text,
            vision=VisionConfig(**_known(VisionConfig, vision)) if vision else None,
            timeseries=TimeSeriesConfig(**_known(TimeSeriesConfig, ts)) if ts else None,
            **_known(cls, d),
        )

    def replace(self, **changes) -> "S1Config":
        return dataclasses.replace(copy.deepcopy(self), **changes)


def _known(cls, d: dict) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in (d or {}).items() if k in names}


# ---------------------------------------------------------------- presets


def _intern_s1() -> S1Config:
    text = TextConfig(
        vocab_size=153216, hidden_size=4096, intermediate_size=12288, num_hidden_layers=94,
        num_attention_heads=64, num_key_value_heads=4, head_dim=128, num_experts=128,
        num_experts_per_tok=8, moe_intermediate_size=1536, norm_topk_prob=True,
    )
    vision = VisionConfig(
        hidden_size=3200, num_hidden_layers=45, num_attention_heads=25, intermediate_size=12800,
        norm_type="rms_norm", use_qk_norm=True, attention_bias=False,
    )
    return S1Config(text=text, vision=vision, name="intern-s1")


def _intern_s1_mini() -> S1Config:
    text = TextConfig(
        vocab_size=153216, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128,
    )
    vision = VisionConfig()  # InternViT-300M defaults
    return S1Config(text=text, vision=vision, name="intern-s1-mini")


def _tiny_vision() -> VisionConfig:
    # 112px tiles of 14px patches: 64 patches -> 16 image tokens per tile after pixel shuffle
    return VisionConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        image_size=112, patch_size=14, norm_type="rms_norm", use_qk_norm=True,
        attention_bias=False, max_tiles=4,
    )


def _tiny_ts() -> TimeSeriesConfig:
    return TimeSeriesConfig(
        patch_dim=32, patch_heads=4, patch_ffn_dim=64, embed_dim=64, num_mel_bins=32,
        d_model=64, encoder_layers=1, encoder_attention_heads=4, encoder_ffn_dim=128,
        max_source_positions=1500, output_dim=64, max_samples=240_000,
        patch_max_len=512,  # patches are at most 2 * stride_base = 320 samples long
    )


# The tiny presets' embedding rows: the 1,618 ids of their own tokenizer (tokenizer/assets/tiny:
# a 1,024-token prose BPE, one token per SMILES or DNA character), padded to a multiple of 64.
# Small and tied, the embedding is 0.2M of the model's parameters and the head a small part
# of its FLOPs, so training compute goes into the body.
TINY_VOCAB = 1664


def _tiny(moe: bool = True) -> S1Config:
    text = TextConfig(
        vocab_size=TINY_VOCAB, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=4096,
        rope_theta=10_000.0, tie_word_embeddings=True, bos_token_id=None, eos_token_id=None,
    )
    if moe:
        text = dataclasses.replace(
            text, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=128, mlp_only_layers=[0]
        )
    return S1Config(
        text=text, vision=_tiny_vision(), timeseries=_tiny_ts(),
        image_token_id=0, ts_token_id=0, name="tiny" if moe else "tiny-dense",
    )


def _debug() -> S1Config:
    cfg = _tiny(moe=True)
    cfg.text = dataclasses.replace(
        cfg.text, vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, num_experts=4,
        moe_intermediate_size=32, mlp_only_layers=[], tie_word_embeddings=False,
    )
    cfg.vision = dataclasses.replace(cfg.vision, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=56)
    cfg.name = "debug"
    return cfg


def _s1_100m() -> S1Config:
    text = TextConfig(
        vocab_size=32768, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=4, head_dim=64, num_experts=16,
        num_experts_per_tok=2, moe_intermediate_size=512, max_position_embeddings=8192,
        bos_token_id=None, eos_token_id=None,
    )
    return S1Config(text=text, vision=_tiny_vision(), timeseries=_tiny_ts(), image_token_id=0, ts_token_id=0, name="s1-100m")


PRESETS = {
    "intern-s1": _intern_s1,
    "intern-s1-mini": _intern_s1_mini,
    "tiny": _tiny,
    "tiny-dense": lambda: _tiny(moe=False),
    "debug": _debug,
    "s1-100m": _s1_100m,
}


def get_preset(name: str) -> S1Config:
    """A fresh copy of a named preset; a clear error for an unknown name."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]()

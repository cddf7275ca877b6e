"""`S1ForConditionalGeneration`: the one OpenS1 model class (Intern-S1 layout).

    language_model   Qwen3Model (dense or MoE decoder, no head)
    lm_head          Linear(hidden -> vocab), tied to the embeddings when the config says so
    vision_tower, multi_modal_projector   InternViT + pixel-shuffle MLP (when config.vision)
    ts_tower, ts_projector                time-series encoder + projector (when config.timeseries)

Text-only when `config.vision is None and config.timeseries is None`.

Multimodal splice (as in HF InternS1): the prompt holds one `image_token_id`
per image feature and one `ts_token_id` per series feature; the features
replace those embeddings in order (`masked_scatter`). Counts must match exactly.

The forward is architecture only: it returns logits (or, with `return_hidden=True`, the
final hidden states, so that a loss can run the head on the rows it needs: the fused
head + cross-entropy is `opens1.train.losses`), and the MoE load-balancing loss when asked.
With a KV cache (`infer/kv_cache.py`) it is also the decode step. `generate` is a thin
keyword call into `opens1.infer.generate`, which owns generation. Saving and loading are
functions of `opens1.models.checkpoint` (`save_model`, `load_model`); `count_parameters`
sizes a preset or config on the meta device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from opens1.config import S1Config, get_preset
from opens1.infer.generate import generate
from opens1.infer.sampling import SamplingParams
from opens1.models.language import Qwen3Model
from opens1.models.moe import load_balancing_loss
from opens1.models.timeseries import TimeSeriesProjector, TimeSeriesTower
from opens1.models.vision import InternVisionModel, MultiModalProjector


@dataclass
class ModelOutput:
    logits: torch.Tensor | None = None  # [B, T, V] (or [B, logits_to_keep, V]); None with return_hidden
    hidden_states: torch.Tensor | None = None  # [B, T, H] after the final norm (return_hidden=True)
    aux_loss: torch.Tensor | None = None  # raw Switch load-balancing loss (MoE, output_router_logits=True)
    kv_cache: object | None = None


class S1ForConditionalGeneration(nn.Module):
    def __init__(self, config: S1Config):
        super().__init__()
        self.config = config
        t = config.text
        self.language_model = Qwen3Model(t)
        self.lm_head = nn.Linear(t.hidden_size, t.vocab_size, bias=False)
        if t.tie_word_embeddings:
            self.lm_head.weight = self.language_model.embed_tokens.weight
        self.vision_tower = self.multi_modal_projector = None
        self.ts_tower = self.ts_projector = None
        if config.vision is not None:
            self.vision_tower = InternVisionModel(config.vision)
            self.multi_modal_projector = MultiModalProjector(config.vision, t.hidden_size, config.downsample_ratio)
        if config.timeseries is not None:
            self.ts_tower = TimeSeriesTower(config.timeseries)
            self.ts_projector = TimeSeriesProjector(config.timeseries, t.hidden_size)
        self.init_weights()

    # ------------------------------------------------------------ init and helpers

    @torch.no_grad()
    def init_weights(self) -> None:
        """Normal(0, initializer_range) for matrices and embeddings, zeros for biases,
        ones for norms (the LM). The towers keep their own init (`init_weights()` if
        they define one). A no-op on the meta device."""
        std = self.config.text.initializer_range
        for name, p in self.language_model.named_parameters():
            if p.is_meta:
                continue
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.normal_(0.0, std)
        if not self.config.text.tie_word_embeddings and not self.lm_head.weight.is_meta:
            self.lm_head.weight.normal_(0.0, std)
        for tower in (self.vision_tower, self.multi_modal_projector, self.ts_tower, self.ts_projector):
            if tower is not None and hasattr(tower, "init_weights"):
                tower.init_weights()

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    # ------------------------------------------------------------ multimodal splice

    def embed(self, input_ids, pixel_values=None, time_series=None, sampling_rates=None) -> torch.Tensor:
        """Token embeddings [B, T, H] with image / series features spliced in."""
        x = self.language_model.embed_tokens(input_ids)
        if pixel_values is not None:
            if self.vision_tower is None:
                raise ValueError("pixel_values given but this model has no vision tower (config.vision is None)")
            feats = self.multi_modal_projector(self.vision_tower(pixel_values.to(x.dtype)))  # [N, P, H]
            x = _splice(x, input_ids, self.config.image_token_id, feats.reshape(-1, x.shape[-1]), "image")
        if time_series is not None:
            if self.ts_tower is None:
                raise ValueError("time_series given but this model has no time-series tower (config.timeseries is None)")
            if sampling_rates is None:
                raise ValueError("time_series needs sampling_rates (one per series)")
            series = [s.to(device=x.device, dtype=x.dtype) for s in time_series]
            feats = [self.ts_projector(f) for f in self.ts_tower(series, list(sampling_rates))]
            x = _splice(x, input_ids, self.config.ts_token_id, torch.cat(feats, 0).reshape(-1, x.shape[-1]), "time-series")
        return x

    # ------------------------------------------------------------ forward

    def forward(self, input_ids=None, *, attention_mask=None, position_ids=None, pixel_values=None,
                time_series=None, sampling_rates=None, doc_ids=None, kv_cache=None, cache_rows=None,
                inputs_embeds=None, logits_to_keep: int = 0, return_hidden: bool = False,
                output_router_logits: bool = False) -> ModelOutput:
        """See docs/API.md. input_ids [B, T]; attention_mask [B, T] (0 = padding; positions
        count real tokens only); doc_ids [B, T] packed documents (block-diagonal attention,
        positions restart per document).
        `logits_to_keep=n`: logits for the last n positions only (generation).
        `return_hidden=True`: no head; `.hidden_states` [B, T, H] instead of `.logits`.
        `output_router_logits=True` (MoE): `.aux_loss`, the load-balancing loss over real tokens.
        `kv_cache`, `cache_rows` [b]: decode against a KVCache (rows = its slots, continuous batching)."""
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("give input_ids or inputs_embeds")
            inputs_embeds = self.embed(input_ids, pixel_values, time_series, sampling_rates)
        hidden, router_logits = self.language_model(
            inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, doc_ids=doc_ids,
            kv_cache=kv_cache, cache_rows=cache_rows)
        out = ModelOutput(kv_cache=kv_cache)
        if return_hidden:
            out.hidden_states = hidden
        else:
            out.logits = self.lm_head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        if router_logits and output_router_logits:
            mask = None if attention_mask is None else attention_mask.reshape(-1)
            out.aux_loss = load_balancing_loss(router_logits, self.config.text.num_experts_per_tok, mask)
        return out

    # ------------------------------------------------------------ generation

    def generate(self, input_ids: torch.Tensor, *, max_new_tokens: int = 32, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, eos_token_id=None, attention_mask=None,
                 pixel_values=None, time_series=None, sampling_rates=None, generator: torch.Generator | None = None,
                 pad_token_id: int | None = None, vocab_limit: int | None = None, compile: bool = False) -> torch.Tensor:
        """Prompt [B, T] (left padded, with attention_mask, for batches) -> [B, T + n], n <=
        max_new_tokens; greedy by default (temperature 0). See `opens1.infer.generate.generate`."""
        eos = () if eos_token_id is None else (eos_token_id,) if isinstance(eos_token_id, int) else tuple(eos_token_id)
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                min_p=min_p, stop_token_ids=eos, vocab_limit=vocab_limit)
        return generate(self, input_ids, params, attention_mask=attention_mask, pixel_values=pixel_values,
                        time_series=time_series, sampling_rates=sampling_rates, generator=generator,
                        pad_token_id=pad_token_id, compile=compile)


def _splice(x, input_ids, token_id, feats, what):
    mask = input_ids == token_id  # [B, T]
    n = int(mask.sum())
    if n != feats.shape[0]:
        raise ValueError(f"{what} features do not match the prompt: {feats.shape[0]} feature tokens but "
                         f"{n} placeholder tokens (id {token_id}) in input_ids")
    return x.masked_scatter(mask[..., None], feats.to(x.dtype))


def count_parameters(name_or_config: str | S1Config, *, active: bool = False) -> int:
    """Parameters of a preset (or config), counted on the meta device: no memory is used.
    With active=True, count what one token touches (top-k experts instead of all)."""
    cfg = get_preset(name_or_config) if isinstance(name_or_config, str) else name_or_config
    with torch.device("meta"):
        model = S1ForConditionalGeneration(cfg)
    total = sum(p.numel() for p in model.parameters())
    if not active or not cfg.text.is_moe:
        return total
    per_expert = 3 * cfg.text.hidden_size * cfg.text.moe_intermediate_size
    n_moe = sum(cfg.text.is_moe_layer(i) for i in range(cfg.text.num_hidden_layers))
    return total - n_moe * per_expert * (cfg.text.num_experts - cfg.text.num_experts_per_tok)

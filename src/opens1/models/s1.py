"""`S1ForConditionalGeneration`: the one OpenS1 model class (Intern-S1 layout).

    language_model   Qwen3Model (dense or MoE decoder, no head)
    lm_head          Linear(hidden -> vocab), tied to the embeddings when the config says so
    vision_tower, multi_modal_projector   InternViT + pixel-shuffle MLP (when config.vision)
    ts_tower, ts_projector                time-series encoder + projector (when config.timeseries)

Text-only when `config.vision is None and config.timeseries is None`. The towers
are imported lazily inside __init__, so the text path works on its own.

Multimodal splice (as in HF InternS1): the prompt holds one `image_token_id`
per image feature and one `ts_token_id` per series feature; the features
replace those embeddings in order (`masked_scatter`). Counts must match exactly.

Generation (`generate`) runs one prefill and then one decode step per token
against a preallocated `KVCache` (no per-step reallocation); batches are left
padded, and the cache derives positions from the attention mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from opens1.config import S1Config
from opens1.models.language import Qwen3Model
from opens1.models.moe import load_balancing_loss


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [B, T, V] (or [B, logits_to_keep, V])
    loss: torch.Tensor | None = None  # CE (+ router_aux_loss_coef * aux_loss for MoE)
    aux_loss: torch.Tensor | None = None  # raw Switch load-balancing loss (MoE, when labels are given)
    kv_cache: object | None = None
    ce_loss: torch.Tensor | None = None  # the cross-entropy part of `loss`


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
            from opens1.models.vision import InternVisionModel, MultiModalProjector

            self.vision_tower = InternVisionModel(config.vision)
            self.multi_modal_projector = MultiModalProjector(config.vision, t.hidden_size, config.downsample_ratio)
        if config.timeseries is not None:
            from opens1.models.timeseries import TimeSeriesProjector, TimeSeriesTower

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

    def num_parameters(self, active: bool = False) -> int:
        from opens1.config import count_parameters

        return count_parameters(self.config, active=active)

    def save_pretrained(self, path, max_shard_size: int | str = "4GB") -> None:
        """Intern-S1 HF layout: sharded safetensors + index + config.json."""
        from opens1.models.checkpoint import save_pretrained

        save_pretrained(self, path, max_shard_size=max_shard_size)

    @classmethod
    def from_pretrained(cls, path, dtype=None, device=None) -> "S1ForConditionalGeneration":
        from opens1.models.checkpoint import load_model

        return load_model(path, dtype=dtype, device=device)

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

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, pixel_values=None,
                time_series=None, sampling_rates=None, labels=None, doc_ids=None, kv_cache=None,
                inputs_embeds=None, cache_rows=None, logits_to_keep: int = 0,
                output_router_logits: bool = False) -> ModelOutput:
        """See docs/API.md. `labels` [B, T] are aligned with input_ids (HF convention):
        the loss shifts them internally; -100 is ignored, and with `doc_ids` a
        prediction across a document boundary is ignored too.
        `logits_to_keep=n` computes logits for the last n positions only (generation).
        `cache_rows` [b] selects KV-cache slots for this batch (continuous batching)."""
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("give input_ids or inputs_embeds")
            inputs_embeds = self.embed(input_ids, pixel_values, time_series, sampling_rates)
        hidden, router_logits = self.language_model(
            inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, doc_ids=doc_ids,
            kv_cache=kv_cache, cache_rows=cache_rows)
        out = ModelOutput(logits=None, kv_cache=kv_cache)
        if labels is not None:
            # head and loss in one autograd node: no log-softmax copy, no zero-filled grad
            target = shifted_targets(labels, doc_ids)
            out.ce_loss, out.logits = linear_cross_entropy(hidden, self.lm_head.weight, target)
            out.loss = out.ce_loss
        else:
            out.logits = self.lm_head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        t = self.config.text
        if router_logits and (labels is not None or output_router_logits):
            mask = None if attention_mask is None else attention_mask.reshape(-1)
            out.aux_loss = load_balancing_loss(router_logits, t.num_experts_per_tok, mask)
        if labels is not None:
            if out.aux_loss is not None:
                out.loss = out.ce_loss + t.router_aux_loss_coef * out.aux_loss.to(out.ce_loss.dtype)
        return out

    # ------------------------------------------------------------ generation

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int = 32, temperature=0.0, top_k=0, top_p=1.0,
                 min_p=0.0, eos_token_id=None, attention_mask=None, pixel_values=None, time_series=None,
                 sampling_rates=None, generator: torch.Generator | None = None, pad_token_id=None,
                 vocab_limit: int | None = None, compile: bool = False) -> torch.Tensor:
        """Prompt [B, T] (left padded, with attention_mask, for batches) -> [B, T + n] with
        n <= max_new_tokens new tokens; rows that finished early are filled with pad
        (pad_token_id, else the first eos id, else 0). Greedy when temperature == 0.
        vocab_limit: never sample ids >= this (the tokenizer's size, when the embedding
        is padded past it).
        compile: run the decode steps through `torch.compile` (infer/static.py): about 2x
        faster per token for small models, after a one-off compile of tens of seconds."""
        from opens1.infer.kv_cache import KVCache
        from opens1.infer.sampling import sample
        from opens1.infer.static import StaticDecoder, cache_length

        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, T], got {tuple(input_ids.shape)}")
        if attention_mask is not None and not bool(attention_mask[:, -1].all()):
            raise ValueError("generate() needs left padding: the last position of every row must be a real token")
        input_ids = input_ids.to(self.device)
        B, T = input_ids.shape
        eos = _as_id_tensor(eos_token_id, self.device)
        pad = pad_token_id if pad_token_id is not None else (int(eos[0]) if eos is not None else 0)
        # compiled steps see the cache length as a shape: round it up so calls share the code
        cache = KVCache.for_model(self, B, cache_length(T + max_new_tokens) if compile else T + max_new_tokens)
        dec = StaticDecoder(self) if compile else None
        am = None if attention_mask is None else attention_mask.to(self.device)
        out = self(input_ids, attention_mask=am, pixel_values=pixel_values, time_series=time_series,
                   sampling_rates=sampling_rates, kv_cache=cache, logits_to_keep=1)
        new = torch.full((B, max_new_tokens), pad, dtype=torch.long, device=self.device)
        done = torch.zeros(B, dtype=torch.bool, device=self.device)
        n = 0
        logits = out.logits[:, -1]
        for i in range(max_new_tokens):
            if vocab_limit is not None:  # rows past the tokenizer (vocab padded to a multiple of 64)
                logits = logits.clone()
                logits[:, vocab_limit:] = float("-inf")
            tok = sample(logits, temperature, top_k, top_p, min_p, generator)
            if eos is not None:
                tok = torch.where(done, torch.full_like(tok, pad), tok)
                done |= torch.isin(tok, eos)
            new[:, i] = tok
            n = i + 1
            if i + 1 == max_new_tokens or (eos is not None and bool(done.all())):
                break
            logits = self(tok[:, None], kv_cache=cache).logits[:, -1] if dec is None else dec.step(cache, tok)
        return torch.cat([input_ids, new[:, :n]], dim=1)


def shifted_targets(labels: torch.Tensor, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
    """labels [B, T] aligned with input_ids -> next-token targets [B, T] (-100 at the last
    position and, with doc_ids, where the next token starts another document)."""
    target = F.pad(labels[:, 1:], (0, 1), value=-100)
    if doc_ids is not None:
        cross = F.pad(doc_ids[:, 1:] != doc_ids[:, :-1], (0, 1), value=False)
        target = target.masked_fill(cross, -100)
    return target


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross entropy over targets != -100 (float32), from full logits."""
    target = shifted_targets(labels, doc_ids)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=-100)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


# rows of the head per chunk in the fused loss: a [256, V] block of logits stays in cache
# while it is reduced, turned into its gradient and fed to both matmuls
CE_CHUNK = 256


class _LinearCrossEntropy(torch.autograd.Function):
    """logits = h @ W^T and their mean CE against targets, in one node, chunked over rows.

    When gradients are needed, the forward computes them too (Liger-style): per chunk of
    rows, softmax - onehot is formed while the logits are still in cache and fed straight
    into grad_h = G @ W and grad_W += G^T @ h, so the [N, V] probabilities never exist and
    backward only scales. The full logits are still returned (the model's API gives them);
    gradients that flow into them (another loss on the logits) are added in backward."""

    @staticmethod
    def forward(ctx, h, w, target):
        N, V = h.shape[0], w.shape[0]
        grads = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        logits = h.new_empty(N, V)
        valid = target != -100
        n = valid.sum().clamp_min(1)
        loss = torch.zeros((), dtype=torch.promote_types(h.dtype, torch.float32), device=h.device)
        gh = torch.zeros_like(h) if grads else None
        # grad_W sums over chunks: in float32 when the weight is bf16/fp16, cast back at the end
        gw = torch.zeros_like(w, dtype=torch.promote_types(w.dtype, torch.float32)) if grads else None
        for s in range(0, N, CE_CHUNK):
            hc, tc, vc = h[s:s + CE_CHUNK], target[s:s + CE_CHUNK], valid[s:s + CE_CHUNK]
            lc = torch.mm(hc, w.t(), out=logits[s:s + CE_CHUNK])  # [C, V]
            lf = _at_least_fp32(lc)
            # One fused softmax pass instead of logsumexp's amax/sub/exp/sum plus a second
            # exp for the gradient (4.0 -> 1.1 ms per [256, 8192] chunk on one core). The loss
            # needs lse = m + log(sum exp(x - m)) with m the row max: the largest softmax value
            # is exp(0) / sum = 1 / sum (never below 1/V, so no underflow), hence
            # lse - x_t = m - x_t - log(max p), exact to float32 rounding.
            p = torch.softmax(lf, dim=-1)  # [C, V], float32
            lse = lf.amax(dim=-1) - p.amax(dim=-1).log()  # [C]
            picked = lf.gather(1, tc.clamp_min(0)[:, None]).squeeze(1)
            loss += ((lse - picked) * vc).sum()
            if grads:
                g = p  # softmax - onehot, formed in place
                rows = vc.nonzero().squeeze(1)
                g[rows, tc[rows]] -= 1.0
                g = g.to(h.dtype)
                # the per-row scale (1/n, 0 on padding) goes on the thin side of each matmul,
                # [C, H], not on the [C, V] block
                scale = (vc / n).to(h.dtype)[:, None]
                torch.mm(g, w, out=gh[s:s + CE_CHUNK]).mul_(scale)
                if gw.dtype == w.dtype:
                    gw.addmm_(g.t(), hc * scale)
                else:
                    gw += g.t() @ (hc * scale)
        if gw is not None:
            gw = gw.to(w.dtype)
        ctx.save_for_backward(h, w, gh, gw)
        ctx.set_materialize_grads(False)  # unused logits get no zero-filled [N, V] gradient
        return loss / n, logits

    @staticmethod
    def backward(ctx, g_loss, g_logits):
        h, w, gh, gw = ctx.saved_tensors
        dh = dw = None
        if g_loss is not None:
            dh, dw = gh * g_loss.to(gh.dtype), gw * g_loss.to(gw.dtype)
        if g_logits is not None:
            g = g_logits.to(h.dtype)
            dh = g @ w if dh is None else dh.addmm_(g, w)
            dw = g.t() @ h if dw is None else dw.addmm_(g.t(), h)
        return dh, dw, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor):
    """hidden [B, T, H], weight [V, H], target [B, T] -> (mean CE, logits [B, T, V]).

    Under autocast the head's matmuls run in the autocast dtype, as nn.Linear's would
    (autocast does not reach into an autograd.Function's out= matmuls by itself); the
    softmax and the loss stay in float32 either way."""
    B, T, H = hidden.shape
    h, dev = hidden.reshape(B * T, H), hidden.device.type
    if torch.is_autocast_enabled(dev):
        amp = torch.get_autocast_dtype(dev)
        h, weight = h.to(amp), weight.to(amp)  # differentiable casts: grads reach fp32 weights
    with torch.autocast(dev, enabled=False):
        loss, logits = _LinearCrossEntropy.apply(h, weight, target.reshape(-1))
    return loss, logits.view(B, T, -1)


def _splice(x, input_ids, token_id, feats, what):
    mask = input_ids == token_id  # [B, T]
    n = int(mask.sum())
    if n != feats.shape[0]:
        raise ValueError(f"{what} features do not match the prompt: {feats.shape[0]} feature tokens but "
                         f"{n} placeholder tokens (id {token_id}) in input_ids")
    return x.masked_scatter(mask[..., None], feats.to(x.dtype))


def _as_id_tensor(ids, device):
    if ids is None:
        return None
    ids = [ids] if isinstance(ids, int) else list(ids)
    return torch.tensor(ids, dtype=torch.long, device=device) if ids else None

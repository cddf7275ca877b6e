"""The Intern-S1 time-series tower (as lmdeploy's interns1_pro_time_series.py): adaptive patching + a Whisper-style encoder.

    series [T, C] at sampling rate sr (z-scored; processing/series.py)
      -> encoder_embed (adaptive subsampling)
           stride = floor(160 / (1 + exp(-sr/100))^6), patch = 2*stride (50% overlap),
           n = ceil((T - patch)/stride) + 1 patches, zero padding at the end;
           each patch and channel: Conv1d(1->D, k5) + ReLU + sinusoidal positions
           + one post-LN nn.TransformerEncoderLayer, mean over time, then over channels
           -> [n, D]; concat-subsample x2 (odd last frame dropped) -> [n//2, 2D]
      -> encoder (Whisper-style)
           adapt_in Linear(2D -> 80), Conv1d(80->d, k3) + GELU, Conv1d(d->d, k3, s2) + GELU,
           learned positions (zero beyond max_source_positions), pre-LN layers with a
           CAUSAL mask, final LayerNorm, adapt_out Linear(d -> output_dim)
      -> [(n//2 + 1)//2, output_dim]     (64,000 samples at 16 kHz -> 100 tokens)
      -> TimeSeriesProjector: LN -> Linear -> GELU -> Linear into the LM width

Design choices
- Module and parameter names follow the reference implementation (`encoder_embed.conv`,
  `encoder_embed.transformer_encoder.layers.0.*`, `encoder_embed.pos_encoder.pe`,
  `encoder.{adapt_in,conv1,conv2,embed_positions,layers.i.*,layer_norm,adapt_out}`), so a
  checkpoint maps by prefix only. The patch transformer *is* torch's nn.TransformerEncoder
  (the reference uses it with PyTorch defaults), so its parameter names match exactly.
- Series are processed one at a time through the encoder (grouped when lengths are equal):
  the reference pads a batch, which leaks padding into the last real frames through the
  convolutions; per-series processing gives what a batch of one gives, always.
- The patch stage runs its (patches x channels) short sequences in chunks to bound memory
  on long inputs (240k samples at low rates make ~100k patches).
- The token-count arithmetic lives in `patch_geometry`/`num_tokens` here, and
  processing/series.py uses the same functions, so the prompt and the tower always agree.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
import torch.nn as nn
import torch.nn.functional as F

from opens1.config import TimeSeriesConfig
from opens1.models.layers import ProjectorMLP


def adaptive_stride(sampling_rate: float, stride_base: int = 160) -> int:
    """floor(stride_base / (1 + exp(-sr/100))^6), evaluated in float32 as the reference does
    (16 kHz -> 160, 360 Hz -> 136, 100 Hz -> 24, ~0 Hz -> 2)."""
    sr = torch.tensor(float(sampling_rate), dtype=torch.float32)
    return int(torch.floor(stride_base / (1 + torch.exp(-sr / 100)) ** 6))


def patch_geometry(num_samples: int, sampling_rate: float, stride_base: int = 160) -> tuple[int, int, int]:
    """(stride, patch, n_patches) for a series of `num_samples` samples.
    n = ceil((T - patch)/stride) + 1, in exact integer arithmetic."""
    stride = adaptive_stride(sampling_rate, stride_base)
    if stride < 1:
        raise ValueError(f"sampling rate {sampling_rate} gives a patch stride of {stride}; it must be >= 1")
    patch = 2 * stride
    n = -((patch - num_samples) // stride) + 1  # ceil((T - patch) / stride) + 1, also for T < patch
    return stride, patch, n


def num_tokens(num_samples: int, sampling_rate: float, stride_base: int = 160) -> int:
    """Tokens the tower emits: n patches -> n//2 frames -> ceil(frames/2) after the stride-2 conv."""
    _, _, n = patch_geometry(num_samples, sampling_rate, stride_base)
    return (n // 2 + 1) // 2 if n > 0 else 0


def check_length(num_samples: int, sampling_rate: float, stride_base: int = 160) -> int:
    """num_tokens, or a ValueError naming the minimum length when a series is too short."""
    n_tok = num_tokens(num_samples, sampling_rate, stride_base)
    if n_tok < 1:
        stride, patch, _ = patch_geometry(num_samples, sampling_rate, stride_base)
        need = patch + 1  # two patches -> one frame -> one token
        raise ValueError(
            f"time series of {num_samples} samples at {sampling_rate} Hz is too short for one token "
            f"(patch {patch}, stride {stride}); need at least {need} samples"
        )
    return n_tok


class SinusoidalPositions(nn.Module):
    """Fixed sin/cos table, stored as the reference does ([max_len, 1, D], persistent)."""

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        pe = torch.zeros(max_len, dim)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)
        self.register_buffer("pe", pe[:, None, :], persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, L, D]
        return x + self.pe[: x.shape[1], 0].to(x.dtype)


class AdaptivePatchEmbed(nn.Module):
    """Stage A: raw [T, C] series -> [n_patches//2, 2*patch_dim] frames."""

    def __init__(self, cfg: TimeSeriesConfig):
        super().__init__()
        if cfg.embed_dim != 2 * cfg.patch_dim:
            raise ValueError(f"embed_dim ({cfg.embed_dim}) must be 2 * patch_dim ({cfg.patch_dim}): concat-subsample x2")
        self.cfg = cfg
        self.conv = nn.Conv1d(1, cfg.patch_dim, kernel_size=5, stride=1, padding=2)
        layer = nn.TransformerEncoderLayer(
            cfg.patch_dim, cfg.patch_heads, dim_feedforward=cfg.patch_ffn_dim, dropout=cfg.patch_dropout,
            batch_first=True,  # same parameters as the reference's sequence-first layer
        )
        self.transformer_encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.pos_encoder = SinusoidalPositions(cfg.patch_dim, cfg.patch_max_len)
        self.chunk = 512  # (patch, channel) sequences per step of the patch transformer

    def patches(self, x: torch.Tensor, sampling_rate: float) -> torch.Tensor:
        """[T, C] -> [n, patch, C] overlapping windows (end zero-padded)."""
        t = x.shape[0]
        stride, patch, n = patch_geometry(t, sampling_rate, self.cfg.stride_base)
        if n < 1:
            check_length(t, sampling_rate, self.cfg.stride_base)
        if patch > self.cfg.patch_max_len:
            raise ValueError(f"patch length {patch} exceeds patch_max_len {self.cfg.patch_max_len}")
        pad = (n - 1) * stride + patch - t
        x = F.pad(x, (0, 0, 0, pad))  # zero rows at the end
        return x.unfold(0, patch, stride).transpose(1, 2)  # unfold gives [n, C, patch] -> [n, patch, C]

    def encode_patches(self, p: torch.Tensor) -> torch.Tensor:
        """[n, L, C] -> [n, D]: every (patch, channel) is its own length-L sequence."""
        n, length, c = p.shape
        if self.cfg.interleaved_channels:
            seqs = p.reshape(n * c, 1, length)  # the reference's reshape (mixes channels when C > 1)
        else:
            seqs = p.permute(0, 2, 1).reshape(n * c, 1, length)  # [n*C, 1, L], one channel each
        outs = []
        for s in seqs.split(self.chunk):
            h = F.relu(self.conv(s)).transpose(1, 2)  # [b, L, D]
            h = self.transformer_encoder(self.pos_encoder(h))
            outs.append(h.mean(1))  # mean over time within the patch
        return torch.cat(outs).reshape(n, c, -1).mean(1)  # then over channels

    def forward(self, x: torch.Tensor, sampling_rate: float) -> torch.Tensor:
        h = self.encode_patches(self.patches(x.to(self.conv.weight.dtype), sampling_rate))  # [n, D]
        h = h[: h.shape[0] // 2 * 2]  # drop an odd last frame
        return torch.cat([h[0::2], h[1::2]], dim=-1)  # [n//2, 2D]


class WhisperAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"d_model {dim} is not divisible by encoder_attention_heads {heads}")
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=False)  # Whisper's k_proj has no bias
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (p(x).view(b, t, self.heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        # causal, as both reference implementations build a lower-triangular mask
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class WhisperLayer(nn.Module):
    """transformers' WhisperEncoderLayer (pre-LN attention and GELU FFN), dropout 0."""

    def __init__(self, cfg: TimeSeriesConfig):
        super().__init__()
        self.self_attn = WhisperAttention(cfg.d_model, cfg.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.d_model)
        self.fc1 = nn.Linear(cfg.d_model, cfg.encoder_ffn_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_dim, cfg.d_model)
        self.final_layer_norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class TimeSeriesEncoder(nn.Module):
    """Stage B: frames [B, m, 2D] -> [B, ceil(m/2), output_dim]."""

    def __init__(self, cfg: TimeSeriesConfig):
        super().__init__()
        self.adapt_in = nn.Linear(cfg.embed_dim, cfg.num_mel_bins)
        self.conv1 = nn.Conv1d(cfg.num_mel_bins, cfg.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(cfg.d_model, cfg.d_model, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(cfg.max_source_positions, cfg.d_model)
        self.layers = nn.ModuleList(WhisperLayer(cfg) for _ in range(cfg.encoder_layers))
        self.layer_norm = nn.LayerNorm(cfg.d_model)
        self.adapt_out = nn.Linear(cfg.d_model, cfg.output_dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.adapt_in(frames).transpose(1, 2)  # [B, 80, m]
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # [B, ceil(m/2), d]
        t = x.shape[1]
        pos = self.embed_positions.weight[: min(t, self.embed_positions.num_embeddings)]
        if t > pos.shape[0]:  # beyond the table the reference adds zeros, it does not truncate
            pos = F.pad(pos, (0, 0, 0, t - pos.shape[0]))
        x = x + pos.to(x.dtype)
        for layer in self.layers:
            x = layer(x)
        return self.adapt_out(self.layer_norm(x))


class TimeSeriesTower(nn.Module):
    """list of [T_i, C_i] series + their sampling rates -> list of [n_i, output_dim]."""

    def __init__(self, tcfg: TimeSeriesConfig):
        super().__init__()
        self.config = tcfg
        self.encoder_embed = AdaptivePatchEmbed(tcfg)
        self.encoder = TimeSeriesEncoder(tcfg)

    def forward(self, series: list[torch.Tensor], sampling_rates: list[float]) -> list[torch.Tensor]:
        if isinstance(series, torch.Tensor):
            series = [series]
        if len(series) != len(sampling_rates):
            raise ValueError(f"{len(series)} series but {len(sampling_rates)} sampling rates")
        frames = []
        for x, sr in zip(series, sampling_rates):
            if x.ndim == 1:
                x = x[:, None]
            if x.ndim != 2:
                raise ValueError(f"a time series must be [T, C], got shape {tuple(x.shape)}")
            check_length(x.shape[0], sr, self.config.stride_base)
            frames.append(self.encoder_embed(x, sr))  # [m_i, 2D]
        # The encoder is causal but its convolutions see padding: batch only equal lengths.
        out: list[torch.Tensor | None] = [None] * len(frames)
        groups = defaultdict(list)
        for i, f in enumerate(frames):
            groups[f.shape[0]].append(i)
        for idx in groups.values():
            enc = self.encoder(torch.stack([frames[i] for i in idx]))
            for j, i in enumerate(idx):
                out[i] = enc[j]
        return out

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        """Normal linears/embeddings, default (Kaiming) convs, unit norms; the sinusoidal table is fixed."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=std)
            elif isinstance(m, (nn.Conv1d, nn.LayerNorm)):
                m.reset_parameters()
            elif isinstance(m, nn.MultiheadAttention):
                m._reset_parameters()
        pe = SinusoidalPositions(self.config.patch_dim, self.config.patch_max_len).pe
        self.encoder_embed.pos_encoder.pe.copy_(pe)


class TimeSeriesProjector(ProjectorMLP):
    """[n, output_dim] -> [n, H_text]: LayerNorm (eps 1e-5) -> Linear -> GELU -> Linear."""

    def __init__(self, tcfg: TimeSeriesConfig, text_hidden: int):
        super().__init__(tcfg.output_dim, text_hidden)

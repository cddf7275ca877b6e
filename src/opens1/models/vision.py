"""InternViT (the vision tower of Intern-S1 / InternVL) and the pixel-shuffle projector.

    pixel_values [N,3,S,S]
      -> InternVisionModel: conv patch embed (k = stride = 14), CLS + absolute positions,
         L pre-norm layers with learned layer scale, no final norm, CLS dropped
      -> [N, P, C]                       P = (S/14)^2 (1024 for a 448 tile)
      -> MultiModalProjector: pixel shuffle 0.5 (InternVL "v2" order), LN -> Linear -> GELU -> Linear
      -> [N, P/4, H_text]                (256 tokens per 448 tile)

Design choices
- Module names are exactly transformers' (`embeddings.patch_embeddings.projection`,
  `encoder.layer.{i}.attention.q_proj`, `lambda_1`, ...) so the Intern-S1 / InternVL HF
  checkpoints map onto this module with a prefix rename only (models/checkpoint/internvl.py, interns1.py).
- One attention path, F.scaled_dot_product_attention (non-causal): it picks flash /
  memory-efficient kernels where available and is exact math on CPU.
- The q/k norm of InternViT-6B is an RMSNorm over the full width C, applied *before*
  the heads are split (not per head like Qwen3's); we keep that shape.
- The norm type is a config switch: RMSNorm for InternViT-6B (Intern-S1), LayerNorm
  for InternViT-300M (Intern-S1-mini). Norms compute in float32 for bf16 stability.
- Pixel shuffle copies the exact view/permute sequence of InternVL's pixel_shuffle (ps_version v2): the
  projector's `linear_1` weights are tied to that channel order.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from opens1.config import VisionConfig
from opens1.models.layers import ProjectorMLP, RMSNorm


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    if kind == "rms_norm":
        return RMSNorm(dim, eps)
    if kind == "layer_norm":
        return nn.LayerNorm(dim, eps=eps)
    raise ValueError(f"unknown vision norm_type {kind!r}; expected 'rms_norm' or 'layer_norm'")


class PatchEmbeddings(nn.Module):
    """Conv2d with kernel = stride = patch: [N,3,H,W] -> [N, (H/p)*(W/p), C] (row-major)."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.projection = nn.Conv2d(cfg.num_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.projection(pixel_values.to(self.projection.weight.dtype))  # [N, C, h, w]
        return x.flatten(2).transpose(1, 2)


class VisionEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden_size))
        self.patch_embeddings = PatchEmbeddings(cfg)
        self.position_embeddings = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, cfg.hidden_size))

    def _positions(self, h: int, w: int) -> torch.Tensor:
        """Position embeddings for an h x w patch grid; the trained square grid is
        bicubically resized for other sizes (the CLS position is kept as is)."""
        pos = self.position_embeddings  # [1, 1+G*G, C]
        grid = int(round((pos.shape[1] - 1) ** 0.5))
        if h == grid and w == grid:
            return pos
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
        dim = pos.shape[-1]
        patch_pos = patch_pos.reshape(1, grid, grid, dim).permute(0, 3, 1, 2)  # [1, C, G, G]
        patch_pos = F.interpolate(patch_pos, size=(h, w), mode="bicubic", align_corners=False)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h * w, dim)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        _, _, height, width = pixel_values.shape
        x = self.patch_embeddings(pixel_values)  # [N, P, C]
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1)  # [N, 1+P, C]
        return x + self._positions(height // self.patch_size, width // self.patch_size).to(x.dtype)


class VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        c = cfg.hidden_size
        if c % cfg.num_attention_heads:
            raise ValueError(f"vision hidden_size {c} is not divisible by num_attention_heads {cfg.num_attention_heads}")
        self.num_heads = cfg.num_attention_heads
        self.head_dim = c // self.num_heads
        self.q_proj = nn.Linear(c, c, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(c, c, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(c, c, bias=cfg.attention_bias)
        # Full-width RMSNorm on q and k (InternViT-6B); Identity keeps the state dict clean otherwise.
        self.q_norm = RMSNorm(c, cfg.layer_norm_eps) if cfg.use_qk_norm else nn.Identity()
        self.k_norm = RMSNorm(c, cfg.layer_norm_eps) if cfg.use_qk_norm else nn.Identity()
        self.projection_layer = nn.Linear(c, c, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q = self.q_norm(self.q_proj(x))
        k = self.k_norm(self.k_proj(x))
        v = self.v_proj(x)
        # [N, T, C] -> [N, heads, T, head_dim]
        q, k, v = (y.view(n, t, self.num_heads, self.head_dim).transpose(1, 2) for y in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # scale head_dim^-0.5, no mask
        return self.projection_layer(out.transpose(1, 2).reshape(n, t, c))


class VisionMLP(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        if cfg.hidden_act != "gelu":
            raise ValueError(f"vision hidden_act {cfg.hidden_act!r} is not supported (InternViT uses exact 'gelu')")
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact erf GELU, as ACT2FN["gelu"]


class VisionLayer(nn.Module):
    """Pre-norm block with learned per-channel layer scale (lambda_1, lambda_2)."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.attention = VisionAttention(cfg)
        self.mlp = VisionMLP(cfg)
        self.layernorm_before = make_norm(cfg.norm_type, cfg.hidden_size, cfg.layer_norm_eps)
        self.layernorm_after = make_norm(cfg.norm_type, cfg.hidden_size, cfg.layer_norm_eps)
        self.lambda_1 = nn.Parameter(torch.full((cfg.hidden_size,), cfg.layer_scale_init_value))
        self.lambda_2 = nn.Parameter(torch.full((cfg.hidden_size,), cfg.layer_scale_init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.lambda_1 * self.attention(self.layernorm_before(x))
        return x + self.lambda_2 * self.mlp(self.layernorm_after(x))


class VisionEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.layer = nn.ModuleList(VisionLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x)
        return x


class InternVisionModel(nn.Module):
    """InternViT: pixel_values [N,3,S,S] -> patch features [N, (S/p)^2, C] (CLS dropped).

    The final norm of the HF class is Identity (use_mean_pooling=True in every released
    config), so there is none here."""

    def __init__(self, vcfg: VisionConfig):
        super().__init__()
        self.config = vcfg
        self.embeddings = VisionEmbeddings(vcfg)
        self.encoder = VisionEncoder(vcfg)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must be [N, {self.config.num_channels}, H, W], got {tuple(pixel_values.shape)}"
            )
        x = self.embeddings(pixel_values)  # [N, 1+P, C]
        x = self.encoder(x)
        return x[:, 1:, :]  # vision_feature_select_strategy "default": drop CLS

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        """Random init as InternVL trains from: normal linears/convs, zero biases, unit norms,
        zero CLS/positions (transformers zero-inits those too), lambdas at layer_scale_init_value."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, RMSNorm)):
                nn.init.ones_(m.weight)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, VisionLayer):
                m.lambda_1.fill_(self.config.layer_scale_init_value)
                m.lambda_2.fill_(self.config.layer_scale_init_value)
        nn.init.normal_(self.embeddings.cls_token, std=std)
        nn.init.normal_(self.embeddings.position_embeddings, std=std)


def pixel_shuffle(x: torch.Tensor, scale_factor: float = 0.5) -> torch.Tensor:
    """InternVL's pixel shuffle ("ps_version v2"): [n, w, h, c] -> [n, w*s, h*s, c/s^2].

    The exact view/permute sequence matters: output cell (i, j) concatenates input cells
    (2i,2j), (2i,2j+1), (2i+1,2j), (2i+1,2j+1), which is the order `linear_1` was trained on."""
    n, w, h, c = x.shape
    if (h * scale_factor) % 1 or (w * scale_factor) % 1 or (c / scale_factor**2) % 1:
        raise ValueError(f"feature grid {w}x{h}x{c} is not divisible for pixel shuffle at {scale_factor}")
    x = x.reshape(n, w, int(h * scale_factor), int(c / scale_factor))
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * scale_factor), int(w * scale_factor), int(c / (scale_factor * scale_factor)))
    return x.permute(0, 2, 1, 3).contiguous()


class MultiModalProjector(ProjectorMLP):
    """Pixel shuffle + MLP into the LM: [N, P, C] -> [N, P*r^2, H_text] (r = downsample_ratio)."""

    def __init__(self, vcfg: VisionConfig, text_hidden: int, downsample_ratio: float = 0.5):
        super().__init__(vcfg.hidden_size * int(round(1 / downsample_ratio)) ** 2, text_hidden)
        self.downsample_ratio = downsample_ratio

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        n, p, c = features.shape
        side = int(round(p**0.5))
        if side * side != p:
            raise ValueError(f"projector expects a square patch grid, got {p} patches")
        x = pixel_shuffle(features.reshape(n, side, side, c), self.downsample_ratio)
        return super().forward(x.reshape(n, -1, x.shape[-1]))  # [N, P*r^2, 4C] -> [N, P*r^2, H]

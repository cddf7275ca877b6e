"""Parameter-efficient fine-tuning: freezing parts of the model, and LoRA.

`freeze(model, parts)` stops gradients for named parts of an S1 model ("vision",
"projector", "router", "timeseries", "embeddings", "language"). Intern-S1's RL stage
freezes the vision tower and the MoE router; LoRA-SFT recipes also freeze the projector.

`LoRALinear` is an nn.Linear subclass that keeps the original `weight`/`bias` (frozen)
and adds a low-rank update: y = x W^T + (alpha / r) * dropout(x) A^T B^T, A [r, in]
(Kaiming-uniform), B [out, r] (zeros, so training starts exactly at the base model).
Being a subclass with the same parameter names, it leaves checkpoint keys unchanged
(only `.lora_A`/`.lora_B` are added), works under FSDP2 and activation checkpointing,
and `merge_lora` folds the update back into plain nn.Linear layers for export.
We write our own (60 lines) rather than depend on peft, which wraps modules in ways
that rename keys and does not know our model class.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

FREEZE_PARTS = {
    "vision": ("vision_tower",),
    "projector": ("multi_modal_projector",),
    "timeseries": ("ts_tower", "ts_projector"),
    "embeddings": ("language_model.embed_tokens",),
    "language": ("language_model", "lm_head"),
}


def freeze(model: nn.Module, parts: list[str]) -> int:
    """Set requires_grad=False on the named parts; returns the number of frozen parameters."""
    n = 0
    for part in parts:
        if part == "router":  # the MoE gate of every sparse layer: "...mlp.gate.weight"
            hit = [p for name, p in model.named_parameters() if name.endswith("mlp.gate.weight")]
        elif part in FREEZE_PARTS:
            prefixes = FREEZE_PARTS[part]
            hit = [p for name, p in model.named_parameters() if name.startswith(prefixes)]
        else:
            raise ValueError(f"cannot freeze {part!r}; choose from {sorted(FREEZE_PARTS) + ['router']}")
        for p in hit:
            if p.requires_grad:
                p.requires_grad_(False)
                n += p.numel()
    return n


class LoRALinear(nn.Linear):
    def __init__(self, base: nn.Linear, r: int, alpha: float = 16.0, dropout: float = 0.0):
        if r < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {r}")
        nn.Module.__init__(self)  # skip nn.Linear's allocation: reuse the base parameters
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.r, self.scaling = r, alpha / r
        dev, dt = base.weight.device, base.weight.dtype
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, device=dev, dtype=dt))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, device=dev, dtype=dt))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x [..., in] -> [..., out]; the low-rank path costs r * (in + out) per token
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B) * self.scaling

    def merged_weight(self) -> torch.Tensor:
        return self.weight + (self.lora_B @ self.lora_A) * self.scaling

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, r={self.r}, scaling={self.scaling:g}"


def apply_lora(model: nn.Module, targets: list[str], r: int, alpha: float = 16.0, dropout: float = 0.0,
               freeze_rest: bool = True, scope: str = "language_model") -> int:
    """Replace every nn.Linear under `scope` (a module-name prefix; "" = everywhere) whose
    name ends with one of `targets` by a LoRALinear. The default scope keeps the vision and
    time-series towers (which also have q/k/v projections) out. With freeze_rest,
    everything except the LoRA matrices is frozen. Returns the count."""
    if freeze_rest:
        for p in model.parameters():
            p.requires_grad_(False)
    n = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            in_scope = not scope or full == scope or full.startswith(scope + ".")
            if in_scope and type(child) is nn.Linear and any(full.endswith(t) for t in targets):
                setattr(module, child_name, LoRALinear(child, r, alpha, dropout))
                n += 1
    if n == 0:
        raise ValueError(f"no nn.Linear under {scope!r} matched the LoRA targets {targets}")
    return n


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRALinear into a plain nn.Linear (in place); returns how many."""
    n = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None,
                                  device=child.weight.device, dtype=child.weight.dtype)
                with torch.no_grad():
                    plain.weight.copy_(child.merged_weight())
                    if child.bias is not None:
                        plain.bias.copy_(child.bias)
                setattr(module, child_name, plain)
                n += 1
    return n


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full model state with LoRA folded in and lora_* keys removed (FSDP shards are
    gathered; collective; under FSDP only rank 0 receives the tensors)."""
    from opens1.train.checkpointing import model_state

    sd = model_state(model)
    out = {k: v for k, v in sd.items() if ".lora_" not in k}
    for k in [k for k in sd if k.endswith(".lora_A")]:
        prefix = k[: -len(".lora_A")]
        mod = model.get_submodule(prefix)
        out[prefix + ".weight"] = sd[prefix + ".weight"] + (sd[prefix + ".lora_B"] @ sd[k]) * mod.scaling
    return out


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return train, total

"""Parameter-efficient fine-tuning: freezing parts of the model, and LoRA.

`freeze(model, parts)` stops gradients for named parts of an S1 model ("vision",
"projector", "router", "timeseries", "embeddings", "language"). Intern-S1's RL stage
freezes the vision tower and the MoE router; LoRA-SFT recipes also freeze the projector.

LoRA is a weight parametrization (torch.nn.utils.parametrize) on chosen nn.Linear
layers: reading `layer.weight` gives W + (alpha / r) * B A, with A [r, in]
(Kaiming-uniform) and B [out, r] (zeros, so training starts exactly at the base model),
and W frozen. Weight space rather than a wrapper module because the model's hot paths
read `proj.weight` directly (F.linear on the fused qkv projection): a wrapper's forward
would be bypassed, a parametrization cannot be. The cost is one [out, in] add per layer
per forward, like a merged adapter. `merge_lora` folds the update in and removes the
parametrization, leaving plain nn.Linear layers and the original checkpoint keys.
We write our own (~80 lines) rather than depend on peft, which wraps modules (renaming
keys, and bypassed by direct weight reads) and does not know our model class.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from opens1.train.state import model_state

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


class LoRAWeight(nn.Module):
    """The parametrization: W [out, in] -> W + scaling * B @ A."""

    def __init__(self, out_features: int, in_features: int, r: int, alpha: float, device=None, dtype=None):
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {r}")
        self.r, self.scaling = r, alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (self.lora_B @ self.lora_A).to(weight.dtype) * self.scaling

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:g}"


def add_lora(linear: nn.Linear, r: int, alpha: float = 16.0) -> LoRAWeight:
    """Give one nn.Linear a LoRA update (its base weight and bias are frozen)."""
    w = linear.weight
    lora = LoRAWeight(w.shape[0], w.shape[1], r, alpha, device=w.device, dtype=w.dtype)
    w.requires_grad_(False)
    if linear.bias is not None:
        linear.bias.requires_grad_(False)
    parametrize.register_parametrization(linear, "weight", lora)
    return lora


def lora_layers(model: nn.Module) -> dict[str, LoRAWeight]:
    """{module name: its LoRAWeight} for every layer with a LoRA update."""
    out = {}
    for name, m in model.named_modules():
        if parametrize.is_parametrized(m, "weight"):
            for p in m.parametrizations["weight"]:
                if isinstance(p, LoRAWeight):
                    out[name] = p
    return out


def apply_lora(model: nn.Module, targets: list[str], r: int, *, alpha: float = 16.0, dropout: float = 0.0,
               freeze_rest: bool = True, scope: str = "language_model") -> int:
    """Add LoRA to every nn.Linear under `scope` (a module-name prefix; "" = everywhere)
    whose own name (the last dotted component) is one of `targets`. The default scope
    keeps the vision and time-series towers (which also have q/k/v projections) out.
    With freeze_rest, everything except the LoRA matrices is frozen. Returns the count."""
    if dropout:
        raise ValueError("lora_dropout is not supported: OpenS1's LoRA is a weight-space update")
    if freeze_rest:
        for p in model.parameters():
            p.requires_grad_(False)
    n = 0
    for name, module in list(model.named_modules()):
        in_scope = not scope or name == scope or name.startswith(scope + ".")
        own = name.rsplit(".", 1)[-1]
        if in_scope and type(module) is nn.Linear and own in targets:
            add_lora(module, r, alpha)
            n += 1
    if n == 0:
        raise ValueError(f"no nn.Linear under {scope!r} matched the LoRA targets {targets}")
    return n


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA update into its layer's weight and remove the parametrization (in
    place): plain nn.Linear layers with the original keys again. Returns how many."""
    layers = lora_layers(model)
    for name in layers:
        parametrize.remove_parametrizations(model.get_submodule(name), "weight", leave_parametrized=True)
    return len(layers)


_ORIG = ".parametrizations.weight.original"


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full model state with LoRA folded in, under the original keys (FSDP shards are
    gathered; collective; under FSDP only rank 0 receives the tensors)."""
    sd = model_state(model)
    layers = lora_layers(model)
    out = {k: v for k, v in sd.items() if ".parametrizations.weight." not in k}
    for k in [k for k in sd if k.endswith(_ORIG)]:
        prefix = k[: -len(_ORIG)]
        w = sd[k]
        lora = layers.get(prefix)
        if lora is not None:
            a, b = sd[f"{prefix}.parametrizations.weight.0.lora_A"], sd[f"{prefix}.parametrizations.weight.0.lora_B"]
            w = w + (b @ a).to(w.dtype) * lora.scaling
        out[prefix + ".weight"] = w
    return out


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return train, total

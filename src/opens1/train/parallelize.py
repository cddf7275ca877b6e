"""Scale-out, applied from outside the model: activation checkpointing, then
torch.compile (optional), then FSDP2 (`torch.distributed.fsdp.fully_shard`).

The model code knows nothing about any of this (torchtitan's design): the same
S1ForConditionalGeneration trains on one CPU, or sharded over N GPUs under torchrun.

Order matters:
  1. activation checkpointing wraps each decoder (and vision / time-series encoder) layer's
     forward so its activations are recomputed in backward (memory ~ one layer instead of all);
  2. compile each layer (the per-layer graph is small and repeats, so it compiles once);
  3. FSDP2 shards each decoder layer (and each vision-tower layer) as its own unit, then
     the root: parameters are all-gathered just before a unit runs and freed after, and
     gradients are reduce-scattered as soon as a unit's backward is done. Sharding the
     root last picks up what is left (embeddings, head, norms, projectors).
Mixed precision under FSDP: bf16 parameters for compute, fp32 gradient reduction and fp32
master weights (the optimizer steps on the fp32 shards).
"""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    lm = getattr(model, "language_model", None)
    return list(lm.layers) if lm is not None and hasattr(lm, "layers") else []


def vision_layers(model: nn.Module) -> list[nn.Module]:
    vt = getattr(model, "vision_tower", None)
    if vt is None:
        return []
    for attr in ("encoder.layers", "layers", "encoder.layer"):
        mod = vt
        try:
            for part in attr.split("."):
                mod = getattr(mod, part)
        except AttributeError:
            continue
        if isinstance(mod, nn.ModuleList):
            return list(mod)
    return []


def timeseries_layers(model: nn.Module) -> list[nn.Module]:
    ts = getattr(model, "ts_tower", None)
    return list(ts.encoder.layers) if ts is not None else []


def checkpoint_layers(layers: list[nn.Module]) -> int:
    """Recompute each layer's activations in backward (when gradients are on); returns how
    many layers. Patches the layer's forward (no wrapper module), so parameter names and
    checkpoints do not change."""
    for layer in layers:
        inner = layer.forward

        @functools.wraps(inner)
        def forward(*args, _inner=inner, **kwargs):
            if not torch.is_grad_enabled():
                return _inner(*args, **kwargs)
            return checkpoint(_inner, *args, use_reentrant=False, **kwargs)

        layer.forward = forward
    return len(layers)


def apply_activation_checkpointing(model: nn.Module) -> int:
    """Activation checkpointing of every decoder, vision and time-series encoder layer (the
    one mechanism: the model files know nothing of it); returns how many layers."""
    return checkpoint_layers(decoder_layers(model) + vision_layers(model) + timeseries_layers(model))


def apply_compile(model: nn.Module) -> int:
    """torch.compile each decoder layer in place (nn.Module.compile keeps names)."""
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def apply_fsdp(model: nn.Module, *, param_dtype: torch.dtype | None = None, reshard_after_forward: bool = True) -> int:
    """Shard the model with FSDP2 over the default process group; returns the number of units."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("FSDP needs an initialized process group (run under torchrun)")
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) if param_dtype else MixedPrecisionPolicy()
    units = decoder_layers(model) + vision_layers(model)
    for i, unit in enumerate(units):
        # the last unit runs first in backward: keeping it gathered saves one all-gather
        fully_shard(unit, mp_policy=mp, reshard_after_forward=reshard_after_forward and i < len(units) - 1)
    # the root (embeddings, LM head, final norm) stays gathered from its forward to its backward,
    # torch's own default for the root: the loss runs the head after the forward (train/losses.py)
    fully_shard(model, mp_policy=mp, reshard_after_forward=False)
    return len(units) + 1


def parallelize(model: nn.Module, *, activation_checkpointing: bool = False, compile: bool = False,
                fsdp: bool | None = None, param_dtype: torch.dtype | None = None) -> nn.Module:
    """Apply checkpointing, compile, then FSDP (default: when world size > 1). In place; returns model."""
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if compile:
        apply_compile(model)
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if fsdp is None:
        fsdp = world > 1
    if fsdp:
        apply_fsdp(model, param_dtype=param_dtype)
    return model

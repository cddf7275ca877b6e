"""A model made ready to serve: weights, tokenizer and defaults from a checkpoint directory
(or random weights for a preset name), the engine, and the `ServerState` the routes share.

    state = build_state("tiny", max_seq_len=1024, served_name="s1-tiny")   # the engine is started

A preset name serves randomly initialised weights whose vocabulary and multimodal token
ids are set from the default tokenizer, so the whole path (template, images, series,
streaming, batching) runs without a checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from opens1.config import PRESETS, get_preset
from opens1.infer.engine import Engine
from opens1.models.checkpoint import generation_defaults, load_model
from opens1.models.s1 import S1ForConditionalGeneration
from opens1.processing.processor import Processor
from opens1.serve.protocol import ServeDefaults
from opens1.serve.state import ServerState
from opens1.tokenizer import load_tokenizer

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


def eos_ids(tokenizer, config, extra=()) -> tuple[int, ...]:
    """Every id that ends a turn: `<|im_end|>`, `<|endoftext|>`, the config's eos and `extra`
    (generation_config.json's)."""
    ids = {tokenizer.eos_token_id, *extra}
    try:
        ids.add(tokenizer.token_to_id("<|endoftext|>"))
    except (KeyError, ValueError):
        pass
    eos = config.text.eos_token_id
    ids |= set(eos if isinstance(eos, list) else [eos])
    return tuple(sorted(i for i in ids if i is not None and 0 <= i < config.text.vocab_size))


def serve_defaults(model: str, generation_config: str = "auto") -> tuple[ServeDefaults, tuple[int, ...]]:
    """(the server's defaults for unset request fields, extra end-of-turn ids) as vLLM's
    `--generation-config` reads them: "auto" takes the model directory's
    generation_config.json, a directory path takes that one's, "opens1" neither. Keys it
    does not set keep Intern-S1's card defaults (0.7 / 1.0 / 50); max_new_tokens becomes
    the default max_tokens; eos_token_id adds end-of-turn ids."""
    base = ServeDefaults()
    src = model if generation_config == "auto" else None if generation_config == "opens1" else generation_config
    if src is None or not Path(src).is_dir():
        if generation_config not in ("auto", "opens1"):
            raise FileNotFoundError(f"--generation-config {generation_config!r}: no such directory")
        return base, ()
    g = generation_defaults(src)
    try:
        sampling = base.sampling.replace(**{k: g[k] for k in SAMPLING_KEYS if k in g})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{Path(src) / 'generation_config.json'}: {e}") from None
    max_tokens = g.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError(f"{Path(src) / 'generation_config.json'}: max_new_tokens must be a positive integer")
    return ServeDefaults(sampling=sampling, max_tokens=max_tokens), tuple(int(i) for i in g.get("eos_token_id", ()))


def load_for_serving(model: str, *, dtype: str | None = None, device: str | None = None,
                     tokenizer_path: str | None = None, seed: int = 0):
    """(model, tokenizer, name) from a checkpoint directory or a preset name."""
    torch_dtype = getattr(torch, dtype) if dtype else None
    path = Path(model)
    if path.is_dir():
        tok = load_tokenizer(tokenizer_path or (str(path) if _has_tokenizer(path) else None))
        m = load_model(str(path), dtype=torch_dtype, device=device)
        m.vocab_limit = len(tok)  # generate() never samples ids this tokenizer lacks
        return m, tok, model
    if model not in PRESETS:
        raise FileNotFoundError(f"--model {model!r} is neither a checkpoint directory nor a preset ({', '.join(PRESETS)})")
    tok = load_tokenizer(tokenizer_path)
    cfg = get_preset(model)
    # random weights: the vocabulary and the multimodal placeholders follow the tokenizer
    cfg.text.vocab_size = -(-len(tok) // 64) * 64  # rounded up to a multiple of 64, as checkpoints are
    cfg.image_token_id = tok.token_to_id("<IMG_CONTEXT>")
    cfg.ts_token_id = tok.token_to_id("<TS_CONTEXT>")
    cfg.text.eos_token_id = tok.eos_token_id
    torch.manual_seed(seed)
    m = S1ForConditionalGeneration(cfg)
    if hasattr(m, "init_weights"):
        m.init_weights()
    m = m.to(device=device or "cpu", dtype=torch_dtype or torch.float32)
    m.vocab_limit = len(tok)
    return m, tok, model


def _has_tokenizer(path: Path) -> bool:
    # OpenS1's own layout, or an Intern-S1 HF directory
    return any((path / f).exists() for f in ("opens1_tokenizer.json", "vocab.json"))


def build_state(
    model: str,
    *,
    api_key: str | None = None,
    served_name: str | list[str] | tuple[str, ...] | None = None,
    max_batch_size: int = 16,
    max_seq_len: int | None = None,
    max_queue: int = 256,
    cache_budget_tokens: int | None = None,
    dtype: str | None = None,
    device: str | None = None,
    tokenizer_path: str | None = None,
    seed: int = 0,
    start: bool = True,
    cpu_workers: int = 2,
    host: str = "127.0.0.1",
    allowed_hosts: tuple[str, ...] = (),
    generation_config: str = "auto",
    special_tokens_in_content: bool = False,
    **limits,
) -> ServerState:
    """Load a model and build the engine and the API state (the engine is started unless
    `start` is False). max_seq_len: the context per sequence (vLLM's max_model_len; default
    the model config's max_position_embeddings). served_name: the names clients use
    (default: `model` as given). `limits`: ServerState's budgets (chars_per_token,
    max_request_pixels, ...)."""
    defaults, gen_eos = serve_defaults(model, generation_config)
    m, tok, name = load_for_serving(model, dtype=dtype, device=device, tokenizer_path=tokenizer_path, seed=seed)
    ctx = int(m.config.text.max_position_embeddings)
    if max_seq_len is not None and max_seq_len > ctx:
        raise ValueError(f"--max-model-len {max_seq_len} exceeds the model's context ({ctx}, max_position_embeddings "
                         "in its config)")
    names = [served_name] if isinstance(served_name, str) else list(served_name or []) or [name]
    engine = Engine(
        m, eos_token_ids=eos_ids(tok, m.config, gen_eos), max_batch_size=max_batch_size,
        max_seq_len=max_seq_len or ctx, max_queue=max_queue,
        cache_budget_tokens=cache_budget_tokens, valid_vocab_size=len(tok), seed=seed,
    )
    if start:
        engine.start()
    return ServerState(
        engine=engine, tokenizer=tok, processor=Processor(tok, m.config), model_name=names[0], aliases=tuple(names[1:]),
        api_key=api_key, defaults=defaults, special_tokens_in_content=special_tokens_in_content,
        supports_images=m.config.vision is not None, supports_series=m.config.timeseries is not None,
        cpu_workers=cpu_workers, bind_host=host, allowed_hosts=tuple(allowed_hosts), **limits,
    )

"""`opens1 serve`: an OpenAI-compatible API server (and web UI) for an S1 model.

Usage (vLLM's habits):
    opens1 serve tiny                                  # random weights, default tokenizer (demos, tests)
    opens1 serve runs/sft/final --port 8000            # a checkpoint directory (HF or OpenS1 layout)
    opens1 serve DIR --api-key secret --max-num-seqs 32 --max-model-len 8192 --served-model-name s1

Then:
    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
         -d '{"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 32}'
or open http://127.0.0.1:8000/ for the chat page.

API: /v1/chat/completions (stream or not; `reasoning_content`, `tool_calls`; thinking on
unless `chat_template_kwargs: {"enable_thinking": false}`; content parts text, image_url
with data: URLs only, and OpenS1's `{"type": "time_series", "time_series": {"values":
[[...]], "sampling_rate": 360}}`; `response_format` json_object / json_schema by
constrained decoding, `thinking_budget`), /v1/completions, /v1/models, /tokenize,
/detokenize, /metrics (Prometheus), /version, /health, /v1/opens1/molecule?smiles=...
(RDKit SVG). Beyond OpenAI's fields: top_k, min_p, repetition_penalty, ignore_eos,
chat_template_kwargs, thinking_budget. Sampling defaults: the checkpoint's
generation_config.json, else Intern-S1's card (0.7 / 1.0 / 50). The model is served under
the name given (the path as typed, as vLLM does) unless --served-model-name says otherwise;
the context is the model config's unless --max-model-len says otherwise.

A preset name serves randomly initialised weights whose vocabulary and multimodal
token ids are set from the default tokenizer, so the whole path (template, images,
series, streaming, batching) runs without a checkpoint.

Limits (docs/serving.md, "Limits and threat model"): a prompt has at most
--max-model-len x --chars-per-token characters; images at most 40 M pixels each and
--max-request-pixels in all; series at most --max-series-values values (length x
channels). Tokenizing, image decoding and RDKit run in --cpu-workers processes.
Without --api-key the server answers only to loopback names and --host (add names
with --allowed-hosts).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

import torch

from opens1.cli.util import HelpFormatter
from opens1.processing.series import MAX_SERIES_VALUES
from opens1.serve.prepare import CHARS_PER_TOKEN, MAX_REQUEST_PIXELS
from opens1.serve.protocol import ServeDefaults

log = logging.getLogger("opens1.serve")


def _eos_ids(tokenizer, config, extra=()) -> tuple[int, ...]:
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


SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


def serve_defaults(model: str, generation_config: str = "auto") -> tuple[ServeDefaults, tuple[int, ...]]:
    """(the server's defaults for unset request fields, extra end-of-turn ids) as vLLM's
    `--generation-config` reads them: "auto" takes the model directory's
    generation_config.json, a directory path takes that one's, "opens1" neither. Keys it
    does not set keep Intern-S1's card defaults (0.7 / 1.0 / 50); max_new_tokens becomes
    the default max_tokens; eos_token_id adds end-of-turn ids."""
    from opens1.models.checkpoint import generation_defaults

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


def load_for_serving(model: str, dtype: str | None = None, device: str | None = None, tokenizer_path: str | None = None, seed: int = 0):
    """(model, tokenizer, name) from a checkpoint directory or a preset name."""
    from opens1 import load_tokenizer
    from opens1.config import PRESETS, get_preset
    from opens1.models.s1 import S1ForConditionalGeneration

    torch_dtype = getattr(torch, dtype) if dtype else None
    path = Path(model)
    if path.is_dir():
        tok = load_tokenizer(tokenizer_path or (str(path) if _has_tokenizer(path) else None))
        from opens1 import load_model

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
):
    """Load a model and build the engine and the API state (the engine is started).
    max_seq_len: the context per sequence (vLLM's max_model_len; default the model
    config's max_position_embeddings). served_name: the names clients use (default: `model`
    as given). `limits`: ServerState's budgets (chars_per_token, max_request_pixels, ...)."""
    from opens1 import Processor
    from opens1.infer.engine import Engine
    from opens1.serve.api import ServerState

    defaults, gen_eos = serve_defaults(model, generation_config)
    m, tok, name = load_for_serving(model, dtype, device, tokenizer_path, seed)
    ctx = int(m.config.text.max_position_embeddings)
    if max_seq_len is not None and max_seq_len > ctx:
        raise ValueError(f"--max-model-len {max_seq_len} exceeds the model's context ({ctx}, max_position_embeddings "
                         "in its config)")
    names = [served_name] if isinstance(served_name, str) else list(served_name or []) or [name]
    engine = Engine(
        m, eos_token_ids=_eos_ids(tok, m.config, gen_eos), max_batch_size=max_batch_size,
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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """uvicorn in a thread, for tests and benchmarks: `with BackgroundServer(state) as url:`."""

    def __init__(self, state, host: str = "127.0.0.1", port: int | None = None, own_engine: bool = True):
        import uvicorn

        from opens1.serve.api import create_app

        self.state, self.own_engine = state, own_engine
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(create_app(state), host=host, port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="opens1-uvicorn", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.state.close()  # the worker pools (a later server on this state starts new ones)
        if self.own_engine:
            self.state.engine.shutdown()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="opens1 serve", description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("model_path", nargs="?", metavar="MODEL",
                    help="checkpoint directory or preset name (tiny, debug, ...), as `vllm serve MODEL`")
    ap.add_argument("--model", default=None, help="the same, as a flag")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--api-key", default=os.environ.get("OPENS1_API_KEY"), help="require 'Authorization: Bearer KEY' (env OPENS1_API_KEY)")
    ap.add_argument("--served-model-name", nargs="+", default=None, metavar="NAME",
                    help="the names clients use; the first is the one responses and /metrics report "
                         "(default: MODEL as given, as vLLM serves the path)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the checkpoint's, else OpenS1's)")
    ap.add_argument("--max-num-seqs", "--max-batch-size", dest="max_num_seqs", type=int, default=16,
                    help="KV-cache slots = sequences decoded together (--max-batch-size: the same)")
    ap.add_argument("--max-model-len", type=int, default=None,
                    help="context per sequence, prompt + completion (default: the model config's max_position_embeddings)")
    ap.add_argument("--max-seq-len", type=int, default=None, help="deprecated: use --max-model-len")
    ap.add_argument("--max-queue", type=int, default=256, help="waiting requests before answering 429")
    ap.add_argument("--cache-budget-tokens", type=int, default=None,
                    help="prompt+max_tokens promised to running and waiting requests before answering 503 "
                         "(default: 2 x slots x context)")
    ap.add_argument("--generation-config", default="auto",
                    help="default sampling: 'auto' (the model directory's generation_config.json), 'opens1' "
                         "(Intern-S1's card: 0.7 / 1.0 / 50), or a directory holding a generation_config.json")
    ap.add_argument("--special-tokens-in-content", action="store_true",
                    help="parse added-token strings (<|im_end|>, <think>, ...) in chat message content as their "
                         "tokens, as HF and vLLM do (default: they stay text, so a user cannot forge turns)")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="default: the checkpoint's (float32 on CPU)")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--cpu-workers", type=int, default=2,
                    help="processes that tokenize prompts and decode images (and one that draws molecules); "
                         "0: threads in the server process")
    ap.add_argument("--allowed-hosts", default="",
                    help="comma-separated extra Host names a keyless server answers to ('*.example.org' patterns; "
                         "'*': any). Always allowed: loopback names and addresses, and --host")
    ap.add_argument("--chars-per-token", type=int, default=CHARS_PER_TOKEN,
                    help="prompts over --max-model-len x this many characters are refused before tokenizing")
    ap.add_argument("--max-request-pixels", type=int, default=MAX_REQUEST_PIXELS,
                    help="pixels (width x height, read from the headers) of all images in one request")
    ap.add_argument("--max-series-values", type=int, default=MAX_SERIES_VALUES,
                    help="time-series values (length x channels) in one request")
    return ap


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line, checked; `model` and `max_model_len` resolved from their spellings."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.model_path and args.model and args.model_path != args.model:
        ap.error(f"two models given: {args.model_path!r} and --model {args.model!r}")
    args.model = args.model_path or args.model
    if not args.model:
        ap.error("give the model: opens1 serve MODEL (a checkpoint directory or a preset name)")
    if args.max_seq_len is not None:
        if args.max_model_len is not None and args.max_model_len != args.max_seq_len:
            ap.error("--max-seq-len is the deprecated spelling of --max-model-len: give one")
        logging.getLogger("opens1.serve").warning("--max-seq-len is deprecated; use --max-model-len")
        args.max_model_len = args.max_seq_len
    if args.max_num_seqs < 1 or (args.max_model_len is not None and args.max_model_len < 2) or args.max_queue < 0:
        ap.error("--max-num-seqs must be >= 1, --max-model-len >= 2, --max-queue >= 0")
    if args.cpu_workers < 0 or min(args.chars_per_token, args.max_request_pixels, args.max_series_values) < 1:
        ap.error("--cpu-workers must be >= 0; --chars-per-token, --max-request-pixels and --max-series-values >= 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    import uvicorn

    from opens1.serve.api import create_app

    try:
        state = build_state(
            args.model, api_key=args.api_key, served_name=args.served_model_name, max_batch_size=args.max_num_seqs,
            max_seq_len=args.max_model_len, max_queue=args.max_queue, dtype=args.dtype, device=device,
            tokenizer_path=args.tokenizer, seed=args.seed, cache_budget_tokens=args.cache_budget_tokens,
            cpu_workers=args.cpu_workers, host=args.host,
            allowed_hosts=tuple(h.strip() for h in args.allowed_hosts.split(",") if h.strip()),
            chars_per_token=args.chars_per_token, max_request_pixels=args.max_request_pixels,
            max_series_values=args.max_series_values, generation_config=args.generation_config,
            special_tokens_in_content=args.special_tokens_in_content,
        )
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"opens1 serve: {e}", file=sys.stderr)
        return 2
    kv = state.engine.runner.cache
    kv_bytes = sum(t.numel() * t.element_size() for t in (getattr(kv, "k", None), getattr(kv, "v", None)) if t is not None)
    log.info("serving %s on http://%s:%d (slots=%d, context=%d, KV cache %.2f GiB)", " / ".join(state.served_names),
             args.host, args.port, args.max_num_seqs, state.max_seq_len, kv_bytes / 2**30)
    try:
        uvicorn.run(create_app(state), host=args.host, port=args.port, log_level=args.log_level.lower())
    finally:
        state.close()
        state.engine.shutdown()
    return 0

"""`opens1 serve`: an OpenAI-compatible API server (and web UI) for an S1 model.

Usage:
    opens1 serve --model tiny                          # random weights, default tokenizer (demos, tests)
    opens1 serve --model runs/sft/final --port 8000    # a checkpoint directory (HF or OpenS1 layout)
    opens1 serve --model DIR --api-key secret --max-batch-size 32 --max-seq-len 8192

Then:
    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
         -d '{"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 32}'
or open http://127.0.0.1:8000/ for the chat page.

API: /v1/chat/completions (stream or not; `reasoning_content`, `tool_calls`; thinking on
unless `chat_template_kwargs: {"enable_thinking": false}`; content parts text, image_url
with data: URLs only, and OpenS1's `{"type": "time_series", "time_series": {"values":
[[...]], "sampling_rate": 360}}`), /v1/completions, /v1/models, /health,
/v1/opens1/molecule?smiles=... (RDKit SVG). Beyond OpenAI's fields: top_k, min_p,
ignore_eos, chat_template_kwargs. Sampling defaults: Intern-S1's (0.7 / 1.0 / 50).

A preset name serves randomly initialised weights whose vocabulary and multimodal
token ids are set from the default tokenizer, so the whole path (template, images,
series, streaming, batching) runs without a checkpoint.

Limits (docs/serving.md, "Limits and threat model"): a prompt has at most
--max-seq-len x --chars-per-token characters; images at most 40 M pixels each and
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

from opens1.processing.series import MAX_SERIES_VALUES
from opens1.serve.prepare import CHARS_PER_TOKEN, MAX_REQUEST_PIXELS
from opens1.serve.protocol import ServeDefaults

log = logging.getLogger("opens1.serve")


def _eos_ids(tokenizer, config) -> tuple[int, ...]:
    """Every id that ends a turn: `<|im_end|>`, `<|endoftext|>` and the config's eos."""
    ids = {tokenizer.eos_token_id}
    try:
        ids.add(tokenizer.token_to_id("<|endoftext|>"))
    except (KeyError, ValueError):
        pass
    eos = config.text.eos_token_id
    ids |= set(eos if isinstance(eos, list) else [eos])
    return tuple(sorted(i for i in ids if i is not None and 0 <= i < config.text.vocab_size))


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
        return m, tok, path.name
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
    return m, tok, model


def _has_tokenizer(path: Path) -> bool:
    # OpenS1's own layout, or an Intern-S1 HF directory
    return any((path / f).exists() for f in ("opens1_tokenizer.json", "vocab.json"))


def build_state(
    model: str,
    *,
    api_key: str | None = None,
    served_name: str | None = None,
    max_batch_size: int = 16,
    max_seq_len: int | None = 4096,
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
    **limits,
):
    """Load a model and build the engine and the API state (the engine is started).
    `limits`: ServerState's budgets (chars_per_token, max_request_pixels, ...)."""
    from opens1 import Processor
    from opens1.infer.engine import Engine
    from opens1.serve.api import ServerState

    m, tok, name = load_for_serving(model, dtype, device, tokenizer_path, seed)
    ctx = m.config.text.max_position_embeddings
    engine = Engine(
        m, eos_token_ids=_eos_ids(tok, m.config), max_batch_size=max_batch_size,
        max_seq_len=min(max_seq_len or ctx, ctx), max_queue=max_queue,
        cache_budget_tokens=cache_budget_tokens, valid_vocab_size=len(tok), seed=seed,
    )
    if start:
        engine.start()
    return ServerState(
        engine=engine, tokenizer=tok, processor=Processor(tok, m.config), model_name=served_name or name,
        api_key=api_key, defaults=ServeDefaults(),
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


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="opens1 serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint directory or preset name (tiny, debug, ...)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--api-key", default=os.environ.get("OPENS1_API_KEY"), help="require 'Authorization: Bearer KEY' (env OPENS1_API_KEY)")
    ap.add_argument("--served-model-name", default=None, help="the name clients use (default: preset or directory name)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the checkpoint's, else OpenS1's)")
    ap.add_argument("--max-batch-size", type=int, default=16, help="KV-cache slots = sequences decoded together")
    ap.add_argument("--max-seq-len", type=int, default=4096, help="context per sequence (prompt + completion)")
    ap.add_argument("--max-queue", type=int, default=256, help="waiting requests before answering 429")
    ap.add_argument("--cache-budget-tokens", type=int, default=None,
                    help="prompt+max_tokens promised to running and waiting requests before answering 503 "
                         "(default: 2 x slots x context)")
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
                    help="prompts over --max-seq-len x this many characters are refused before tokenizing")
    ap.add_argument("--max-request-pixels", type=int, default=MAX_REQUEST_PIXELS,
                    help="pixels (width x height, read from the headers) of all images in one request")
    ap.add_argument("--max-series-values", type=int, default=MAX_SERIES_VALUES,
                    help="time-series values (length x channels) in one request")
    args = ap.parse_args(argv)
    if args.max_batch_size < 1 or args.max_seq_len < 2 or args.max_queue < 0:
        ap.error("--max-batch-size must be >= 1, --max-seq-len >= 2, --max-queue >= 0")
    if args.cpu_workers < 0 or min(args.chars_per_token, args.max_request_pixels, args.max_series_values) < 1:
        ap.error("--cpu-workers must be >= 0; --chars-per-token, --max-request-pixels and --max-series-values >= 1")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    import uvicorn

    from opens1.serve.api import create_app

    try:
        state = build_state(
            args.model, api_key=args.api_key, served_name=args.served_model_name, max_batch_size=args.max_batch_size,
            max_seq_len=args.max_seq_len, max_queue=args.max_queue, dtype=args.dtype, device=device,
            tokenizer_path=args.tokenizer, seed=args.seed, cache_budget_tokens=args.cache_budget_tokens,
            cpu_workers=args.cpu_workers, host=args.host,
            allowed_hosts=tuple(h.strip() for h in args.allowed_hosts.split(",") if h.strip()),
            chars_per_token=args.chars_per_token, max_request_pixels=args.max_request_pixels,
            max_series_values=args.max_series_values,
        )
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"opens1 serve: {e}", file=sys.stderr)
        return 2
    log.info("serving %s on http://%s:%d (slots=%d, context=%d)", state.model_name, args.host, args.port, args.max_batch_size, state.max_seq_len)
    try:
        uvicorn.run(create_app(state), host=args.host, port=args.port, log_level=args.log_level.lower())
    finally:
        state.close()
        state.engine.shutdown()
    return 0

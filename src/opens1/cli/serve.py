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
import sys

import torch

from opens1.cli.util import HelpFormatter
from opens1.processing.series import MAX_SERIES_VALUES
from opens1.serve import server
from opens1.serve.load import build_state
from opens1.serve.prepare import CHARS_PER_TOKEN, MAX_REQUEST_PIXELS

log = logging.getLogger("opens1.serve")


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
    log.info("serving %s on http://%s:%d (slots=%d, context=%d, KV cache %.2f GiB)", " / ".join(state.served_names),
             args.host, args.port, args.max_num_seqs, state.max_seq_len, state.kv_cache_bytes / 2**30)
    server.run(state, host=args.host, port=args.port, log_level=args.log_level.lower())
    return 0

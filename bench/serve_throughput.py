"""Serving throughput: N concurrent streaming clients vs the same N requests served
one at a time, through the real HTTP API (uvicorn on loopback, official `openai` client).

    python bench/serve_throughput.py                         # tiny preset, 16 clients, 64 tokens each
    python bench/serve_throughput.py --clients 32 --max-tokens 256 --device cuda --model s1-100m
    python bench/serve_throughput.py --clients 4 --max-tokens 32 --structured-requests 8

Every request generates exactly --max-tokens tokens (ignore_eos), so both runs do the
same work. Reported: total generated tokens/s for each mode and their ratio (the gain
from continuous batching), time to first token (p50/p95), and that every client completed.

Then the cost of constrained decoding (`response_format: json_schema`, llguidance): one
request at a time, a schema whose answer is a 200-character string, against unconstrained
requests of the same number of tokens: milliseconds per token of each and their ratio.
Random weights: the numbers measure the serving stack, not answer quality.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time

import httpx
import openai
import torch

from opens1.serve.load import build_state
from opens1.serve.server import BackgroundServer, free_port


async def one_request(client: openai.AsyncOpenAI, model: str, i: int, max_tokens: int) -> dict:
    t0 = time.perf_counter()
    ttft = None
    tokens = 0
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"Request {i}: tell me about molecule number {i}."}],
        max_tokens=max_tokens, stream=True, stream_options={"include_usage": True},
        extra_body={"ignore_eos": True, "chat_template_kwargs": {"enable_thinking": False}},
    )
    async for chunk in stream:
        if ttft is None and chunk.choices and (chunk.choices[0].delta.content or getattr(chunk.choices[0].delta, "reasoning_content", None)):
            ttft = time.perf_counter() - t0
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return {"tokens": tokens, "ttft": ttft if ttft is not None else float("nan"), "latency": time.perf_counter() - t0}


async def run(url: str, model: str, n: int, max_tokens: int, concurrent: bool) -> tuple[float, list[dict]]:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=600)
    t0 = time.perf_counter()
    if concurrent:
        results = await asyncio.gather(*(one_request(client, model, i, max_tokens) for i in range(n)))
    else:
        results = [await one_request(client, model, i, max_tokens) for i in range(n)]
    wall = time.perf_counter() - t0
    await client.close()
    return wall, list(results)


STRUCTURED_SCHEMA = {"type": "object", "properties": {"notes": {"type": "string", "minLength": 200, "maxLength": 200}},
                     "required": ["notes"], "additionalProperties": False}


async def structured_overhead(url: str, model: str, n: int) -> tuple[float, float]:
    """(ms per token constrained, ms per token unconstrained), one request at a time; each
    unconstrained request generates as many tokens as its constrained twin did."""
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=600)
    msgs = [{"role": "user", "content": "Describe caffeine."}]
    off = {"chat_template_kwargs": {"enable_thinking": False}}
    fmt = {"type": "json_schema", "json_schema": {"name": "notes", "schema": STRUCTURED_SCHEMA}}
    walls = {"constrained": 0.0, "free": 0.0}
    tokens = 0
    for i in range(n):
        t0 = time.perf_counter()
        r = await client.chat.completions.create(model=model, messages=msgs, max_tokens=400, temperature=1, seed=i,
                                                 response_format=fmt, extra_body=off)
        walls["constrained"] += time.perf_counter() - t0
        k = r.usage.completion_tokens
        t0 = time.perf_counter()
        await client.chat.completions.create(model=model, messages=msgs, max_tokens=k, temperature=1, seed=i,
                                             extra_body={**off, "ignore_eos": True})
        walls["free"] += time.perf_counter() - t0
        tokens += k
    await client.close()
    return 1000 * walls["constrained"] / tokens, 1000 * walls["free"] / tokens


def summarize(name: str, wall: float, results: list[dict], want_tokens: int) -> float:
    tokens = sum(r["tokens"] for r in results)
    done = sum(r["tokens"] == want_tokens for r in results)
    ttft = sorted(r["ttft"] for r in results)
    p95 = ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))]
    print(f"{name:>11}: {done}/{len(results)} complete, {tokens} tokens in {wall:6.2f} s = {tokens / wall:8.1f} tok/s;"
          f" TTFT p50 {statistics.median(ttft) * 1000:7.1f} ms, p95 {p95 * 1000:7.1f} ms")
    return tokens / wall


@contextlib.contextmanager
def server(args):
    """`opens1 serve` in its own process (the client's SSE parsing then does not share
    the server's GIL), or uvicorn in a thread with --in-process."""
    if args.in_process:
        torch.set_num_threads(args.threads)
        state = build_state(args.model, max_batch_size=args.clients, max_seq_len=args.max_model_len, device=args.device, dtype=args.dtype)
        with BackgroundServer(state) as url:
            yield url
        return
    port = free_port()
    cmd = [sys.executable, "-m", "opens1", "serve", args.model, "--port", str(port),
           "--max-num-seqs", str(args.clients), "--max-model-len", str(args.max_model_len), "--device", args.device,
           "--log-level", "warning"] + (["--dtype", args.dtype] if args.dtype else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="preset or checkpoint directory")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-model-len", type=int, default=512)
    ap.add_argument("--structured-requests", type=int, default=4, help="requests of the constrained-decoding comparison")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads of the server")
    ap.add_argument("--in-process", action="store_true", help="run the server in this process (a thread)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    print(f"model {args.model} on {args.device}: {args.clients} requests x {args.max_tokens} tokens, "
          f"{args.clients} KV-cache slots, server {'in-process' if args.in_process else 'in a subprocess'}")
    with server(args) as url:
        name = httpx.get(url + "/v1/models").json()["data"][0]["id"]
        asyncio.run(run(url, name, 2, 4, concurrent=True))  # warm-up
        seq_wall, seq = asyncio.run(run(url, name, args.clients, args.max_tokens, concurrent=False))
        seq_tps = summarize("sequential", seq_wall, seq, args.max_tokens)
        con_wall, con = asyncio.run(run(url, name, args.clients, args.max_tokens, concurrent=True))
        con_tps = summarize("concurrent", con_wall, con, args.max_tokens)
        if args.structured_requests:
            c_ms, f_ms = asyncio.run(structured_overhead(url, name, args.structured_requests))
    print(f"throughput ratio concurrent/sequential: {con_tps / seq_tps:.2f}x")
    if args.structured_requests:
        print(f"constrained decoding (json_schema): {c_ms:.2f} ms/token vs {f_ms:.2f} unconstrained "
              f"= {c_ms / f_ms:.2f}x ({1000 * (c_ms - f_ms):+.0f} us/token)")
    ok = all(r["tokens"] == args.max_tokens for r in seq + con)
    if not ok:
        print("ERROR: some requests did not complete", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

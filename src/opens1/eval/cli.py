"""`opens1 eval`: score a local model or an OpenAI-compatible endpoint on environments.

Examples:
    opens1 eval --list
    opens1 eval --endpoint http://127.0.0.1:8000/v1 --api-model s1 --tasks "chem/*" math/gsm8k \\
        --n-items 50 --samples 4 --out runs/eval1
    opens1 eval --model ckpt/s1-tiny --tasks logic/sorting --n-items 10 --temperature 0.8
    opens1 eval --rescore runs/eval1/generations.jsonl      # re-grade, no generation
    opens1 eval --endpoint URL --tasks physics/scibench --data ../shared/data

Defaults follow Intern-S1's protocol: thinking on, temperature 0.7, top_p 1.0,
top_k 50, held-out split. Outputs in --out: generations.jsonl (every sample with
its sampling parameters and chat-template hash), results.json, results.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from opens1.eval.backends import EVAL_SAMPLING, EndpointBackend, LocalBackend
from opens1.eval.harness import (generate_records, read_jsonl, rescore_records, resolve_tasks, summarize,
                                 write_jsonl_atomic)
from opens1.eval.report import to_markdown, write_report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="opens1 eval", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="local OpenS1/HF checkpoint directory")
    src.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    src.add_argument("--rescore", help="re-grade a saved generations.jsonl without generating")
    src.add_argument("--list", action="store_true", help="list environments and exit")
    p.add_argument("--api-model", default="default", help="model name sent to the endpoint")
    p.add_argument("--api-key", default="EMPTY")
    p.add_argument("--tasks", nargs="+", default=[], help="environment names or globs (chem/*)")
    p.add_argument("--data", default=None, help="data root in the ../shared/data layout (default: embedded)")
    p.add_argument("--split", default="heldout", choices=["train", "heldout"])
    p.add_argument("--difficulty", default=None, choices=["easy", "medium", "hard"])
    p.add_argument("--n-items", type=int, default=20)
    p.add_argument("--samples", type=int, default=1, help="samples per item (multi-run average)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--no-thinking", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", default="runs/eval", help="output directory")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        from opens1.envs import list_envs

        available = set(list_envs(data_root=args.data, available_only=True))
        for name in list_envs():
            print(name + ("" if name in available else "  (data not under --data)"))
        return 0
    out = Path(args.out)
    if args.rescore:
        records = rescore_records(read_jsonl(args.rescore))
        write_jsonl_atomic(out / "generations.rescored.jsonl", records)
        summary = summarize(records)
        write_report(summary, out, "results.rescored")
        print(to_markdown(summary))
        return 0
    if not (args.model or args.endpoint):
        print("opens1 eval: give --model DIR, --endpoint URL, --rescore FILE or --list", file=sys.stderr)
        return 2
    if not args.tasks:
        print("opens1 eval: --tasks is required", file=sys.stderr)
        return 2
    tasks = resolve_tasks(args.tasks, args.data)
    sampling = EVAL_SAMPLING.replace(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                     max_new_tokens=args.max_tokens, seed=args.seed)
    if args.endpoint:
        backend, name = EndpointBackend(args.endpoint, args.api_model, args.api_key), args.api_model
    else:
        backend, name = LocalBackend(args.model, device=args.device), str(args.model)
    records: list[dict] = []
    for task in tasks:  # save after every task: a crash loses at most one task's generations
        records += generate_records(backend, [task], args.n_items, args.samples, sampling, args.split,
                                   args.difficulty, args.data, args.batch_size, name,
                                   enable_thinking=not args.no_thinking)
        write_jsonl_atomic(out / "generations.jsonl", records)
    summary = summarize(records)
    js, md = write_report(summary, out)
    print(to_markdown(summary))
    print(f"wrote {out / 'generations.jsonl'}, {js}, {md}")
    return 0

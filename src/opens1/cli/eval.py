"""`opens1 eval`: score a local model or an OpenAI-compatible endpoint on environments.

Examples:
    opens1 eval --list
    opens1 eval --endpoint http://127.0.0.1:8000/v1 --api-model s1 --tasks "chem/*" math/gsm8k \\
        --n-items 50 --samples 4 --out runs/eval1
    opens1 eval --model ckpt/s1-tiny --tasks logic/sorting,logic/counting --n-items 10 --temperature 0.8
    opens1 eval --model ckpt/s1-tiny --data my_items.jsonl            # your verifiable items
    opens1 eval --rescore runs/eval1/generations.jsonl      # re-grade, no generation
    opens1 eval --endpoint URL --tasks physics/scibench --data ../shared/data

Defaults follow Intern-S1's protocol: thinking on, temperature 0.7, top_p 1.0,
top_k 50, held-out split. Outputs in --out: generations.jsonl (every sample with
its sampling parameters and chat-template hash), results.json (scores and the run's
settings), results.md. Your own items (docs/your-data.md): every row of the file is
scored; `--tasks` may add built-in environments beside them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from opens1.cli.util import HelpFormatter, add_list_argument, add_quiet_argument, check_dir, run_main
from opens1.data.user import register_items, split_data_paths
from opens1.envs import check_env_names, list_envs
from opens1.eval.backends import EVAL_SAMPLING
from opens1.eval.harness import resolve_tasks
from opens1.eval.report import to_markdown
from opens1.eval.run import evaluate, make_backend, rescore_file


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="opens1 eval", description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=HelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="local OpenS1/HF checkpoint directory")
    src.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    src.add_argument("--rescore", help="re-grade a saved generations.jsonl without generating")
    src.add_argument("--list", action="store_true", help="list environments and exit")
    p.add_argument("--api-model", default=None,
                   help="model name sent to the endpoint (default: the first of its /v1/models)")
    p.add_argument("--api-key", default="EMPTY")
    add_list_argument(p, "--tasks", help="environment names or globs (chem/*), comma or space separated")
    p.add_argument("--data", nargs="+", metavar="PATH", default=[],
                   help="your verifiable-item files (.jsonl/.parquet, docs/your-data.md) and/or a data root in "
                        "the ../shared/data layout (default: the embedded subset)")
    p.add_argument("--split", default="heldout", choices=["train", "heldout"])
    p.add_argument("--difficulty", default=None, choices=["easy", "medium", "hard"])
    p.add_argument("--n-items", "--items", dest="n_items", type=int, default=20, help="items per task")
    p.add_argument("--samples", type=int, default=1, help="samples per item (multi-run average)")
    p.add_argument("--temperature", type=float, default=EVAL_SAMPLING.temperature)
    p.add_argument("--top-p", type=float, default=EVAL_SAMPLING.top_p)
    p.add_argument("--top-k", type=int, default=EVAL_SAMPLING.top_k)
    p.add_argument("--max-tokens", type=int, default=EVAL_SAMPLING.max_new_tokens, help="new tokens per sample")
    p.add_argument("--no-thinking", action="store_true", help="thinking off (default: on, as Intern-S1 evaluates)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", default="runs/eval", help="output directory")
    add_quiet_argument(p)
    return p


def _list(data_root) -> int:
    available = set(list_envs(data_root=data_root, available_only=True))
    for name in list_envs():
        print(name + ("" if name in available else "  (data not under --data)"))
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    data_root, item_files = split_data_paths(args.data)
    if args.list:
        return _list(data_root)
    out = Path(args.out)
    if args.rescore:
        print(to_markdown(rescore_file(args.rescore, out=out)))
        return 0
    if not (args.model or args.endpoint):
        print("opens1 eval: give --model DIR, --endpoint URL, --rescore FILE or --list", file=sys.stderr)
        return 2
    if not (args.tasks or item_files):
        print("opens1 eval: --tasks (or --data with your item files) is required", file=sys.stderr)
        return 2
    user_tasks = [register_items(f, all_rows=True) for f in item_files]  # rows checked before any generation
    check_env_names(args.tasks, "task")
    tasks = resolve_tasks(args.tasks, data_root) if args.tasks else []
    tasks += [t for t in user_tasks if t not in tasks]
    sampling = EVAL_SAMPLING.replace(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                     max_new_tokens=args.max_tokens, seed=args.seed)
    if not args.endpoint:
        check_dir(args.model, "model directory")
    backend, name = make_backend(model=args.model, endpoint=args.endpoint, api_model=args.api_model,
                                 api_key=args.api_key, device=args.device)
    settings = {"model": name, "endpoint": args.endpoint, "tasks": tasks, "data": args.data, "split": args.split,
                "difficulty": args.difficulty, "n_items": args.n_items, "samples": args.samples,
                "enable_thinking": not args.no_thinking, "batch_size": args.batch_size,
                "sampling": sampling.to_dict()}
    summary = evaluate(backend, tasks, out=out, n_items=args.n_items, n_samples=args.samples, sampling=sampling,
                       split={t: "heldout" if t in user_tasks else args.split for t in tasks},
                       difficulty=args.difficulty, data_root=data_root, batch_size=args.batch_size,
                       model_name=name, enable_thinking=not args.no_thinking, settings=settings, quiet=args.quiet)
    print(to_markdown(summary))
    print(f"wrote {out / 'generations.jsonl'}, {out / 'results.json'}, {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, None, "opens1 eval"))

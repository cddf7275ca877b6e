"""`opens1 model ...`: inspect presets and checkpoints.

Usage:
    opens1 model params intern-s1              # total and active parameters of a preset
    opens1 model params --all                  # every preset
    opens1 model generate --model DIR --prompt "The reaction of"  [--max-new-tokens 32]
    opens1 model generate --model DIR --ids 1 2 3 --temperature 0.7 --top-p 0.9 --seed 0
    opens1 model init --preset tiny --out DIR  # a randomly initialised checkpoint (for tests and demos)
    opens1 model export --layout internvl SRC OUT   # for transformers' InternVLForConditionalGeneration

`generate` tokenises --prompt with the checkpoint's tokenizer (or --tokenizer, or the
bundled one); --ids skips the tokenizer. Greedy unless --temperature > 0.
"""

from __future__ import annotations

import argparse
import sys

import torch

from opens1.cli.util import HelpFormatter, add_subcommands, did_you_mean
from opens1.config import PRESETS, get_preset
from opens1.models.checkpoint import export_checkpoint, load_model, save_model
from opens1.models.s1 import S1ForConditionalGeneration, count_parameters
from opens1.processing.processor import configure
from opens1.tokenizer import load_tokenizer


def _params(args) -> int:
    names = list(PRESETS) if args.all else [args.preset]
    if not names or names == [None]:
        print("give a preset name or --all", file=sys.stderr)
        return 2
    for name in names:
        try:
            total, active = count_parameters(name), count_parameters(name, active=True)
        except KeyError as e:
            print(e.args[0], file=sys.stderr)
            return 2
        print(f"{name:16s} total {total / 1e9:9.3f}B ({total:,})   active {active / 1e9:9.3f}B ({active:,})")
    return 0


def _load_tokenizer(args):
    for path in ([args.tokenizer] if args.tokenizer else [args.model, None]):
        try:
            return load_tokenizer(path)
        except (FileNotFoundError, ValueError, OSError):
            if args.tokenizer:
                raise
    raise FileNotFoundError("no tokenizer found with the checkpoint or bundled; pass --tokenizer or --ids")


def _generate(args) -> int:
    model = load_model(args.model, dtype=args.dtype, device=args.device)
    tok = None
    if args.ids:
        ids = list(args.ids)
    elif args.prompt is not None:
        tok = _load_tokenizer(args)
        ids = tok.encode(args.prompt)
    else:
        print("give --prompt TEXT or --ids N [N ...]", file=sys.stderr)
        return 2
    if not ids:
        print("the prompt is empty", file=sys.stderr)
        return 2
    vocab = model.config.text.vocab_size
    if max(ids) >= vocab:
        print(f"token id {max(ids)} is outside the model's vocabulary ({vocab})", file=sys.stderr)
        return 2
    gen = torch.Generator(device=model.device).manual_seed(args.seed) if args.seed is not None else None
    eos = model.config.text.eos_token_id if tok is None else getattr(tok, "eos_token_id", None)
    out = model.generate(torch.tensor([ids]), max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                         top_k=args.top_k, top_p=args.top_p, min_p=args.min_p, eos_token_id=eos, generator=gen,
                         vocab_limit=len(tok) if tok is not None else None)
    new = out[0, len(ids):].tolist()
    print(tok.decode(new) if tok is not None else " ".join(map(str, new)))
    return 0


def _init(args) -> int:
    torch.manual_seed(args.seed)
    cfg = get_preset(args.preset)
    if args.text_only:
        cfg = cfg.replace(vision=None, timeseries=None)
    tok = load_tokenizer(args.tokenizer)  # the bundled one unless given
    if cfg.text.vocab_size < len(tok):  # tiny presets: size the vocabulary to the tokenizer
        cfg.text.vocab_size = -(-len(tok) // 64) * 64
        configure(tok, cfg)
    save_model(S1ForConditionalGeneration(cfg), args.out)
    tok.save_pretrained(args.out)
    print(f"wrote a random {args.preset} checkpoint to {args.out}")
    return 0


def _export(args) -> int:
    try:
        info = export_checkpoint(args.src, args.out, layout=args.layout, dtype=args.dtype,
                                 max_shard_size=args.max_shard_size)
    except (FileNotFoundError, ValueError) as e:
        print(f"opens1 model export: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.layout} layout); tokenizer: {info['tokenizer']}")
    for reason, names in info["left_out"].items():
        print(f"left out ({reason}): {len(names)} tensors, e.g. {', '.join(names[:3])}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="opens1 model", description=__doc__, formatter_class=HelpFormatter)
    sub = add_subcommands(ap, dest="cmd", required=True)
    p = sub.add_parser("params", help="total and active parameters of a preset")
    p.add_argument("preset", nargs="?")
    p.add_argument("--all", action="store_true")
    g = sub.add_parser("generate", help="generate from a checkpoint")
    g.add_argument("--model", required=True, help="HF-format checkpoint directory")
    g.add_argument("--prompt")
    g.add_argument("--ids", type=int, nargs="+", help="prompt token ids (no tokenizer needed)")
    g.add_argument("--tokenizer", help="tokenizer path (default: the checkpoint's, else the bundled one)")
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--min-p", type=float, default=0.0)
    g.add_argument("--seed", type=int)
    g.add_argument("--dtype", default=None, help="float32, bfloat16, ... (default: float32 on CPU, bfloat16 on CUDA)")
    g.add_argument("--device", default=None)
    i = sub.add_parser("init", help="write a randomly initialised checkpoint of a preset")
    i.add_argument("--preset", required=True)
    i.add_argument("--out", required=True)
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--text-only", action="store_true", help="drop the vision and time-series towers")
    i.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the bundled one); saved beside the weights")
    e = sub.add_parser("export", help="rewrite a checkpoint for other tools (transformers, vLLM)")
    e.add_argument("src", help="checkpoint directory (any layout load_model reads)")
    e.add_argument("out", help="output directory")
    e.add_argument("--layout", choices=("internvl", "interns1"), default="internvl",
                   help="internvl: transformers' InternVLForConditionalGeneration; interns1: Intern-S1's own")
    e.add_argument("--dtype", default=None, help="float32, bfloat16, ... (default: the checkpoint's)")
    e.add_argument("--max-shard-size", default="4GB")
    args = ap.parse_args(argv)
    preset = getattr(args, "preset", None)
    if preset is not None:
        if preset not in PRESETS:
            print(f"opens1 model: error: unknown preset {preset!r}{did_you_mean(preset, PRESETS)}; "
                  f"known: {', '.join(PRESETS)}", file=sys.stderr)
            return 2
    return {"params": _params, "generate": _generate, "init": _init, "export": _export}[args.cmd](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

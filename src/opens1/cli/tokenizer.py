"""`opens1 tokenizer ...`: train, inspect and export the dynamic scientific tokenizer.

    opens1 tokenizer train --data ../shared/data --out src/opens1/tokenizer/assets \\
                           --large-out src/opens1/tokenizer/assets/large   # the shipped vocabularies
    opens1 tokenizer train --fast --out /tmp/tok                            # default sizes, < 1 min
    opens1 tokenizer train --preset quick --out /tmp/tok                    # seconds, embedded data
    opens1 tokenizer train --data ../shared/data --sizes protein=4608 --out /tmp/tok   # other sizes
    opens1 tokenizer info [--tokenizer DIR | qwen.tiktoken]
    opens1 tokenizer encode "Aspirin is CC(=O)Oc1ccccc1C(=O)O." --show
    opens1 tokenizer decode 12 345 6789
    opens1 tokenizer export-hf --out /tmp/hf_tok   # AutoTokenizer(trust_remote_code=True); /tmp/hf_tok/fast: tokenizer.json
"""

from __future__ import annotations

import argparse
import json
import sys

from opens1.cli.util import HelpFormatter, UserError, add_subcommands
from opens1.tokenizer import load_tokenizer
from opens1.tokenizer.train import TrainConfig, train_many


def _train(args) -> int:
    cfg = TrainConfig.preset("fast" if args.fast else args.preset)
    if args.n_smiles is not None:
        cfg.n_smiles = args.n_smiles
    try:
        cfg.set_sizes(args.sizes or "")
    except ValueError as e:
        raise UserError(f"--sizes: {e}") from None
    outs = {args.out: cfg}
    if args.large_out:
        large = TrainConfig.large()
        large.n_smiles = cfg.n_smiles
        outs[args.large_out] = large
    train_many(args.data, outs)
    return 0


def _info(args) -> int:
    tok = load_tokenizer(args.tokenizer)
    layout = tok.layout()
    layout.pop("provenance", None)
    print(repr(tok))
    print(json.dumps(layout, indent=1, ensure_ascii=False))
    return 0


def _encode(args) -> int:
    tok = load_tokenizer(args.tokenizer)
    text = args.text if args.text is not None else sys.stdin.read()
    ids = tok.encode(text)
    print(" ".join(map(str, ids)))
    if args.show:
        for s in tok.segments(text):
            kind = "tag" if s.tag else (s.domain or "prose")
            print(f"  [{kind:7s}] {text[s.start:s.end]!r}")
        print("  pieces: " + " | ".join(tok.id_to_token(i) for i in ids))
    print(f"{len(text)} chars -> {len(ids)} tokens", file=sys.stderr)
    return 0


def _decode(args) -> int:
    tok = load_tokenizer(args.tokenizer)
    sys.stdout.write(tok.decode([int(x) for x in args.ids], skip_special_tokens=args.skip_special))
    sys.stdout.write("\n")
    return 0


def _export(args) -> int:
    from opens1.tokenizer.hf import export_fast_tokenizer, export_hf_tokenizer  # optional: transformers

    tok = load_tokenizer(args.tokenizer)
    export_hf_tokenizer(tok, args.out)
    export_fast_tokenizer(tok, f"{args.out}/fast")
    print(f"wrote {args.out} (AutoTokenizer.from_pretrained(dir, trust_remote_code=True): OpenS1HFTokenizer) "
          f"and {args.out}/fast (PreTrainedTokenizerFast, no domain vocabularies)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="opens1 tokenizer", description=__doc__, formatter_class=HelpFormatter)
    sub = add_subcommands(ap, dest="cmd", required=True)
    t = sub.add_parser("train", help="train the base BPE and the domain vocabularies")
    t.add_argument("--data", default=None, help="data root in the ../shared/data layout (default: embedded subset)")
    t.add_argument("--out", required=True, help="output tokenizer directory")
    t.add_argument("--preset", choices=("default", "large", "fast", "quick"), default="default",
                   help="default/large: the shipped sizes; fast: default sizes, smaller corpora; quick: tiny, for tests")
    t.add_argument("--fast", action="store_true", help="same as --preset fast")
    t.add_argument("--large-out", default=None, help="also write the large domain vocabularies here")
    t.add_argument("--n-smiles", type=int, default=None, help="MOSES molecules to sample")
    t.add_argument("--sizes", default=None, help="vocabulary sizes, e.g. 'protein=4608,smiles=2048'")
    t.set_defaults(fn=_train)
    for name, fn, help_ in (("info", _info, "show the id layout"), ("encode", _encode, "encode text"),
                            ("decode", _decode, "decode ids"), ("export-hf", _export, "write HF files")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--tokenizer", default=None, help="tokenizer dir or .tiktoken file (default: bundled)")
        if name == "encode":
            p.add_argument("text", nargs="?", default=None, help="text (default: stdin)")
            p.add_argument("--show", action="store_true", help="print spans and pieces")
        if name == "decode":
            p.add_argument("ids", nargs="+")
            p.add_argument("--skip-special", action="store_true")
        if name == "export-hf":
            p.add_argument("--out", required=True)
        p.set_defaults(fn=fn)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

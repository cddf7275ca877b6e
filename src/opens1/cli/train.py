"""`opens1 train`: continued pretraining, multimodal pretraining and SFT, from one CPU to
FSDP2 on many GPUs (the same command).

Examples
    # one process (CPU or one GPU): text continued pretraining of the tiny MoE S1
    opens1 train --preset pretrain --model tiny --steps 200 --out runs/pt

    # the same on 2 processes (gloo on CPU, NCCL on GPUs), FSDP2-sharded
    torchrun --nproc_per_node=2 -m opens1.cli.train --preset pretrain --model tiny --steps 200 --out runs/pt2

    # image-text + time-series pretraining from that checkpoint, square-averaged loss
    opens1 train --preset multimodal --init runs/pt/final --steps 100 --out runs/mm

    # SFT on the task environments with LoRA (rank 8) and a frozen vision tower / projector
    opens1 train --preset sft --init runs/mm/final --lora-rank 8 --freeze vision,projector --out runs/sft

    # any TrainConfig field: --set key=value (repeatable); resume is automatic from --out
    opens1 train --preset pretrain --set lr=1e-3 --set seq_len=1024 --set activation_checkpointing=true

    # padding with and without balanced packing, for the chosen data (no training)
    opens1 train --preset pretrain --padding-report --world 8

    # your own data (docs/your-data.md): text corpora (JSONL, or the Parquet shards of
    # `opens1 data build`) and chat SFT rows in the OpenAI format
    opens1 train --preset pretrain --data shards/shard-00000.parquet --out runs/my-pt
    opens1 train --preset sft --init runs/my-pt/final --data chat.jsonl --out runs/my-sft

A run writes <out>/checkpoints/step_*/ (atomic, safetensors), <out>/metrics.jsonl,
<out>/config.json and, at the end, <out>/final/ (opens1.save_model: opens1.load_model
reads it). Rerunning the same command resumes from the latest checkpoint; a changed
config is refused unless --force. SIGTERM checkpoints and exits cleanly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from opens1.cli.util import HelpFormatter, UserError, run_main, split_list
from opens1.data.stream import build_documents_for, build_stream
from opens1.data.user import is_data_file, split_data_paths
from opens1.processing.processor import Processor
from opens1.tokenizer import load_tokenizer
from opens1.train.build import build_model, prepare_model, sized_preset
from opens1.train.config import apply_overrides, get_train_preset, stage_presets
from opens1.train.distributed import init_distributed, shutdown_distributed
from opens1.train.lora import trainable_parameters
from opens1.train.state import CheckpointError
from opens1.train.trainer import Trainer


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="opens1 train", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter, epilog=__doc__)
    p.add_argument("--preset", default="pretrain", choices=stage_presets(), help="stage preset")
    p.add_argument("--model", help="model preset name (tiny, tiny-dense, debug, s1-100m, ...)")
    p.add_argument("--init", "--init-from", dest="init_from",
                   help="start from a saved model directory (opens1.load_model)")
    p.add_argument("--data", nargs="+", metavar="PATH",
                   help="your JSONL/Parquet files (text or chat rows; docs/your-data.md), and/or a data root "
                        "in the ../shared/data layout (default: the embedded subset)")
    p.add_argument("--sources", help="data mixture, e.g. 'gsm8k:2,smiles,molecule_images' (the preset's by "
                                     "default; none when --data gives files)")
    p.add_argument("--tokenizer", help="tokenizer path (default: the bundled one)")
    p.add_argument("--out", dest="out_dir", help="output directory")
    p.add_argument("--steps", dest="max_steps", type=int, help="optimizer steps")
    p.add_argument("--seq-len", type=int)
    p.add_argument("--batch", dest="micro_batch_size", type=int, help="packed rows per micro-batch per rank")
    p.add_argument("--accum", dest="grad_accum", type=int, help="micro-batches per step (after batch warm-up)")
    p.add_argument("--lr", type=float)
    p.add_argument("--max-seconds", type=float, help="wall-clock budget; stops cleanly with a checkpoint")
    p.add_argument("--lora-rank", type=int)
    p.add_argument("--freeze", help="comma list: vision,projector,router,timeseries,embeddings,language")
    p.add_argument("--device", help="auto | cpu | cuda")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any TrainConfig field (repeatable)")
    p.add_argument("--no-resume", action="store_true", help="start fresh even if --out has checkpoints")
    p.add_argument("--force", action="store_true", help="resume even if the config or data changed")
    p.add_argument("--no-export", action="store_true", help="skip writing <out>/final")
    p.add_argument("--padding-report", action="store_true", help="print padding with/without balanced packing and exit")
    p.add_argument("--world", type=int, default=None, help="ranks to assume for --padding-report")
    p.add_argument("--print-config", action="store_true", help="print the resolved TrainConfig and exit")
    return p


def _split_data(args: argparse.Namespace) -> None:
    """--data PATH...: folders are a data root, files are your own data; data-file names in
    --sources count as --data files."""
    paths = list(args.data or [])
    names = split_list(args.sources) if args.sources else None
    if names is not None:
        paths += [n for n in names if is_data_file(n)]
        args.sources = ",".join(n for n in names if not is_data_file(n))
    root, files = split_data_paths(paths)
    args.data_root = root
    args.data_files = ",".join(files) or None
    if files and names is None:
        args.sources = ""  # your files alone, unless --sources mixes the built-in sources in


def resolve_config(args: argparse.Namespace):
    _split_data(args)
    flags = {k: getattr(args, k) for k in ("model", "init_from", "data_root", "data_files", "sources", "out_dir", "max_steps",
                                           "seq_len", "micro_batch_size", "grad_accum", "lr", "max_seconds",
                                           "lora_rank", "freeze", "device", "seed") if getattr(args, k) is not None}
    cfg = get_train_preset(args.preset, **flags)
    return apply_overrides(cfg, args.overrides)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = resolve_config(args)
    except (KeyError, ValueError, UserError) as e:
        print(f"opens1 train: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(cfg.to_json())
        return 0
    tokenizer = load_tokenizer(args.tokenizer)
    if args.padding_report:
        mcfg = sized_preset(cfg.model, tokenizer)
        stream, _ = build_stream(cfg, tokenizer, Processor(tokenizer, mcfg))
        print(json.dumps(stream.padding_report(world_size=args.world or 2), indent=2))
        return 0

    rank, world, device = init_distributed(cfg.device)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (FSDP shards them)
    clean = False
    try:
        model, mcfg = build_model(cfg, tokenizer)
        processor = Processor(tokenizer, mcfg)
        docs = build_documents_for(cfg, tokenizer, processor)
        stream, hashes = build_stream(cfg, tokenizer, processor, rank=rank, world_size=world, docs=docs)
        model = prepare_model(model, cfg, device)
        n_train, n_total = trainable_parameters(model)
        if rank == 0:
            Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
            (Path(cfg.out_dir) / "config.json").write_text(cfg.to_json())
            print(f"opens1 train: stage={cfg.stage} model={mcfg.name} world={world} device={device} "
                  f"params={n_total / 1e6:.2f}M trainable={n_train / 1e6:.2f}M docs={len(stream.docs)} "
                  f"(dropped {stream.dropped} too long) micro-batches/epoch/rank={stream.micro_batches_per_epoch()}",
                  file=sys.stderr)
        trainer = Trainer(model, cfg, stream, cfg.out_dir, device=device, resume=False if args.no_resume else "auto",
                          force=args.force, data_hashes=hashes, model_config=mcfg)
        result = trainer.fit()
        final = None
        if not args.no_export and result.stopped != "sigterm":
            final = trainer.export(Path(cfg.out_dir) / "final")
            if final is not None and rank == 0:
                tokenizer.save_pretrained(final)  # the model directory is self-contained
        if rank == 0:
            summary = {"stopped": result.stopped, "steps": result.steps, "tokens": result.tokens,
                       "seconds": round(result.seconds, 2), "skipped": result.skipped,
                       "first_loss": result.losses[0] if result.losses else None,
                       "last_loss": result.losses[-1] if result.losses else None,
                       "checkpoint": result.checkpoint, "final": str(final) if final else None}
            print(json.dumps(summary))
        clean = True
    except (ValueError, FileNotFoundError, PermissionError, CheckpointError, UserError) as e:
        print(f"opens1 train: {e}", file=sys.stderr)
        return 2
    finally:
        model = trainer = None  # noqa: F841  (shutdown_distributed frees them before the group goes)
        shutdown_distributed(clean)
    return 0


if __name__ == "__main__":  # pragma: no cover  (the torchrun entry: `torchrun ... -m opens1.cli.train`)
    sys.exit(run_main(main, None, "opens1 train"))

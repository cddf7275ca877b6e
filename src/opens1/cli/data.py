"""`opens1 data ...`: corpus building. Each subcommand parses its flags and calls the
library: parse-pdf (corpus/pdf/run.py), train-classifier (corpus/classify.py), filter
(corpus/filters.py), dedup (corpus/dedup.py) and build (corpus/pipeline.py); their module
docstrings carry the usage examples."""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

from opens1.cli.util import HelpFormatter, UserError, add_quiet_argument, did_you_mean, require
from opens1.common.jsonl import read_documents, write_jsonl
from opens1.common.progress import progress
from opens1.corpus import classify, dedup, filters, pipeline
from opens1.corpus.executors import LocalExecutor, RayExecutor
from opens1.corpus.pdf import run as pdf_run
from opens1.corpus.pdf.parse import ParseConfig
from opens1.corpus.pdf.route import RouterConfig


def _parser(prog: str, module) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"opens1 data {prog}", description=module.__doc__.split("\n\n")[0],
                                   formatter_class=HelpFormatter)


def parse_pdf(argv: list[str] | None = None) -> int:
    ap = _parser("parse-pdf", pdf_run)
    ap.add_argument("pdfs", nargs="+", help="PDF files")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--workers", type=int, default=1, help="parallel processes (one document each)")
    ap.add_argument("--vlm-endpoint", help="OpenAI-compatible base URL of a VLM, e.g. http://127.0.0.1:8000/v1")
    ap.add_argument("--vlm-model", help="model name to ask the VLM endpoint for")
    ap.add_argument("--vlm-max-tokens", type=int, default=4096, help="new tokens asked of the VLM per page")
    ap.add_argument("--no-ocr", action="store_true", help="never run tesseract")
    ap.add_argument("--ocr-lang", help="tesseract languages, e.g. eng+chi_sim (default: by detected script)")
    ap.add_argument("--dpi", type=int, default=150, help="render resolution for OCR/VLM")
    ap.add_argument("--formula-threshold", type=float, default=RouterConfig.formula_threshold)
    ap.add_argument("--symbol-threshold", type=float, default=RouterConfig.symbol_threshold)
    ap.add_argument("--garble-threshold", type=float, default=RouterConfig.garble_threshold)
    ap.add_argument("--display-math-threshold", type=int, default=RouterConfig.display_math_threshold)
    ap.add_argument("--dedup-threshold", type=float, default=0.85, help="MinHash Jaccard; 0 disables")
    ap.add_argument("--force", action="store_true", help="reparse documents that are already done")
    ap.add_argument("--doc-timeout", type=float, default=1800.0, help="seconds per document (0: none)")
    ap.add_argument("--doc-memory", type=int, default=2048,
                    help="MiB a document may grow its worker's address space by (0: no cap)")
    ap.add_argument("--images", action="store_true", help="write the figures the Markdown links to as PNG crops")
    add_quiet_argument(ap)
    a = ap.parse_args(argv)
    if bool(a.vlm_endpoint) != bool(a.vlm_model):
        ap.error("--vlm-endpoint and --vlm-model go together")
    if a.workers < 1:
        ap.error("--workers must be >= 1")
    if a.vlm_endpoint:
        require("openai", "opens1 data parse-pdf --vlm-endpoint")
    cfg = ParseConfig(out=a.out, workers=a.workers, vlm_endpoint=a.vlm_endpoint, vlm_model=a.vlm_model,
                      vlm_max_tokens=a.vlm_max_tokens,
                      ocr=not a.no_ocr, ocr_lang=a.ocr_lang, dpi=a.dpi, formula_threshold=a.formula_threshold,
                      symbol_threshold=a.symbol_threshold, garble_threshold=a.garble_threshold,
                      display_math_threshold=a.display_math_threshold,
                      dedup_threshold=a.dedup_threshold, force=a.force, doc_timeout=a.doc_timeout,
                      doc_memory_mb=a.doc_memory, images=a.images)
    with progress(len(a.pdfs), "parse-pdf", quiet=a.quiet, unit="doc") as bar:
        summary = pdf_run.run([str(p) for p in a.pdfs], cfg, log=lambda s: bar.write(s, file=sys.stderr),
                              tick=lambda: bar.update(1))
    print(json.dumps(summary, indent=1))
    return 0 if summary["documents"] or not summary["errors"] else 1


def train_classifier(argv: list[str] | None = None) -> int:
    ap = _parser("train-classifier", classify)
    ap.add_argument("--data", help="data root in the ../shared/data layout (science positives)")
    ap.add_argument("--negatives", action="append", default=[], help="JSONL(.gz) of non-science documents")
    ap.add_argument("--train", action="append", default=[], help="JSONL with text + label (class name)")
    ap.add_argument("-o", "--output", help="model path prefix (writes .safetensors and .json)")
    ap.add_argument("--calibrate", help="JSONL (text, label 0/1) to pick the P(science) threshold on")
    ap.add_argument("--eval", help="hand-labelled JSONL (text, label 0/1): print precision/recall")
    ap.add_argument("--model", help="with --eval and no training: the model to evaluate ('default')")
    ap.add_argument("--buckets", type=int, default=classify.ClassifierConfig.buckets)
    ap.add_argument("--epochs", type=int, default=classify.ClassifierConfig.epochs)
    ap.add_argument("--per-domain", type=int, default=1500)
    ap.add_argument("--threshold", type=float, help="override the model's P(science) threshold for --eval")
    args = ap.parse_args(argv)
    pairs: list[tuple[str, str]] = []
    if args.data is not None or (args.negatives and not args.train):
        pairs += classify.science_examples(args.data, per_domain=args.per_domain)
    for path in args.negatives:
        negs = [d["text"] for d in read_documents(path)]
        random.Random(0).shuffle(negs)
        pairs += [(t, "none") for t in negs[: args.per_domain * 2]]
    for path in args.train:
        pairs += classify.read_labelled(path)
    clf = None
    if pairs:
        if not args.output:
            ap.error("training needs -o/--output")
        cfg = classify.ClassifierConfig(buckets=args.buckets, epochs=args.epochs)
        texts, labels = zip(*pairs)
        clf = classify.train(list(texts), list(labels), cfg)
        if args.calibrate:
            cal = list(read_documents(args.calibrate))
            clf.calibrate([r["text"] for r in cal], [int(r["label"]) for r in cal])
        clf.save(args.output)
        counts = {c: labels.count(c) for c in clf.classes}
        print(json.dumps({"saved": args.output, "examples": counts, "threshold": clf.threshold}), file=sys.stderr)
    if args.eval:
        clf = clf or classify.load_classifier(None if args.model in (None, "default") else args.model)
        rows = list(read_documents(args.eval))
        thr = clf.threshold if args.threshold is None else args.threshold
        pred = [p.science >= thr for p in clf.predict([r["text"] for r in rows])]
        print(json.dumps(classify.precision_recall(pred, [bool(int(r["label"])) for r in rows])))
    if not pairs and not args.eval:
        ap.error("nothing to do: give --data/--negatives/--train (training) and/or --eval")
    return 0


def filter_docs(argv: list[str] | None = None) -> int:
    ap = _parser("filter", filters)
    ap.add_argument("inputs", nargs="+", help="JSONL(.gz) or Parquet files with a 'text' field")
    ap.add_argument("-o", "--output", required=True, help="kept documents (JSONL)")
    ap.add_argument("--rejected", help="also write rejected documents with their failed rules")
    ap.add_argument("--min-words", type=int, default=filters.QualityConfig.min_words)
    ap.add_argument("--no-clean-lines", action="store_true", help="skip C4-style boilerplate line removal")
    ap.add_argument("--classifier", help="science classifier: 'default' (shipped) or a path; adds scores")
    ap.add_argument("--min-science", type=float, default=0.5, help="keep docs with P(science) >= this")
    args = ap.parse_args(argv)
    clf = None
    if args.classifier:
        clf = classify.load_classifier(None if args.classifier == "default" else args.classifier)
    docs = (d for path in args.inputs for d in read_documents(path))
    kept, rejected = filters.filter_documents(docs, filters.QualityConfig(min_words=args.min_words),
                                              clean=not args.no_clean_lines, classifier=clf,
                                              min_science=args.min_science)
    write_jsonl(args.output, kept)
    if args.rejected:
        write_jsonl(args.rejected, rejected)
    reasons = Counter(r for d in rejected for r in d["quality_fails"])
    print(json.dumps({"kept": len(kept), "rejected": len(rejected), "reasons": dict(reasons)}), file=sys.stderr)
    return 0


def dedup_docs(argv: list[str] | None = None) -> int:
    ap = _parser("dedup", dedup)
    ap.add_argument("inputs", nargs="+", help="JSONL(.gz) or Parquet files with a 'text' field")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--threshold", type=float, default=dedup.DedupConfig.threshold)
    ap.add_argument("--num-perm", type=int, default=dedup.DedupConfig.num_perm)
    ap.add_argument("--ngram", type=int, default=dedup.DedupConfig.ngram)
    ap.add_argument("--engine", choices=["ours", "datasketch"], default="ours")
    ap.add_argument("--exact-only", action="store_true")
    args = ap.parse_args(argv)
    if not 0.0 < args.threshold <= 1.0:
        ap.error("--threshold must be in (0, 1]")
    docs = [d for path in args.inputs for d in read_documents(path)]
    cfg = dedup.DedupConfig(num_perm=args.num_perm, ngram=args.ngram, threshold=args.threshold, engine=args.engine)
    keep, stats = dedup.dedup_mask([d["text"] for d in docs], cfg, exact_only=args.exact_only)
    write_jsonl(args.output, (d for d, k in zip(docs, keep) if k))
    print(json.dumps({"in": stats.n_in, "exact_dups": stats.exact_dups, "near_dups": stats.near_dups,
                      "out": stats.n_out}), file=sys.stderr)
    return 0


def build(argv: list[str] | None = None) -> int:
    ap = _parser("build", pipeline)
    ap.add_argument("inputs", nargs="*", help="JSONL(.gz) or Parquet files with a 'text' field")
    ap.add_argument("--input", "-i", dest="more_inputs", action="append", default=[], metavar="FILE",
                    help="an input file (repeatable; the same as a positional input)")
    ap.add_argument("-o", "--output", "--out", required=True, help="output folder of shard-N.parquet files")
    ap.add_argument("--work", default="", help="working folder (default <output>/_work)")
    ap.add_argument("--shard-size", type=int, default=10_000)
    ap.add_argument("--executor", choices=["local", "ray"], default="local")
    ap.add_argument("--workers", type=int, default=0, help="local processes (default: all cores)")
    ap.add_argument("--ray-address", default=None, help="join a Ray cluster ('auto'); default: local")
    ap.add_argument("--min-words", type=int, default=filters.QualityConfig.min_words)
    ap.add_argument("--classifier", default="default", help="'default', a model path, or 'none'")
    ap.add_argument("--min-science", type=float, default=0.5)
    ap.add_argument("--domain-min-science", default="", help="per-domain cuts, e.g. life=0.8,materials=0.3")
    ap.add_argument("--domain-k", type=int, default=20)
    ap.add_argument("--domain-threshold", type=float, default=0.3)
    ap.add_argument("--judge-endpoint", default="", help="OpenAI-compatible URL: LLM judges each source")
    ap.add_argument("--judge-model", default="default")
    ap.add_argument("--no-dedup", action="store_true")
    ap.add_argument("--no-validity", action="store_true")
    ap.add_argument("--dedup-threshold", type=float, default=dedup.DedupConfig.threshold)
    add_quiet_argument(ap)
    args = ap.parse_args(argv)
    args.inputs = list(args.inputs) + args.more_inputs
    if not args.inputs:
        ap.error("give at least one input file (positional or --input)")
    for p in args.inputs:
        if not Path(p).is_file():
            raise UserError(f"no input file {p!r}" + (" (a folder: pass its files)" if Path(p).is_dir() else ""))
    if args.judge_endpoint:
        require("httpx", "opens1 data build --judge-endpoint")
    try:
        per_domain = {k.strip(): float(v) for k, v in (kv.split("=") for kv in args.domain_min_science.split(",") if kv)}
    except ValueError:
        ap.error(f"--domain-min-science wants name=value pairs, got {args.domain_min_science!r}")
    cfg = pipeline.PipelineConfig(
        inputs=args.inputs, output=args.output, work=args.work, shard_size=args.shard_size,
        min_words=args.min_words, classifier="" if args.classifier == "none" else args.classifier,
        min_science=args.min_science, domain_min_science=per_domain, domain_k=args.domain_k,
        domain_threshold=args.domain_threshold, judge_endpoint=args.judge_endpoint, judge_model=args.judge_model,
        dedup=not args.no_dedup, validity=not args.no_validity, dedup_threshold=args.dedup_threshold)
    ex = RayExecutor(args.ray_address) if args.executor == "ray" else LocalExecutor(args.workers or None, quiet=args.quiet)
    m = pipeline.run_pipeline(cfg, ex)
    print(json.dumps({k: m[k] for k in ("phase_a", "phase_b", "n_out", "input_errors")}), file=sys.stderr)
    if m["input_errors"]:
        print(f"opens1 data build: {m['input_errors']} bad input row(s) or file(s) skipped; "
              f"see {Path(cfg.output) / '_errors.jsonl'}", file=sys.stderr)
    return 0


# subcommand -> (its main, one-line help)
COMMANDS = {
    "parse-pdf": (parse_pdf, "PDF pages to Markdown with page-level routing (cheap parser, OCR, VLM)"),
    "train-classifier": (train_classifier, "train the science-domain classifier"),
    "filter": (filter_docs, "garble/quality heuristics and scientific-purity filtering"),
    "dedup": (dedup_docs, "exact and MinHash-LSH near-duplicate removal"),
    "build": (build, "the whole pipeline (filter, validity, dedup, shard) locally or on Ray"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: opens1 data <command> [options]\n\ncommands:")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name.ljust(16)}  {text}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"opens1 data: unknown command {argv[0]!r}{did_you_mean(argv[0], COMMANDS)}; known: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    return int(COMMANDS[argv[0]][0](argv[1:]) or 0)

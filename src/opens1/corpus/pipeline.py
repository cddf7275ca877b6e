"""The corpus pipeline: filter, validity, classify, domain decisions, dedup, sharded Parquet; run
locally (multiprocessing) or on a Ray cluster from ONE pipeline definition.

The pipeline is three phases over shards (a shard = a row range of one input file):

    A (map, per shard)   clean lines -> quality rules -> SMILES/sequence validity -> science
                         classifier -> exact key + MinHash signature; writes work/a/shard-N.parquet
    B (reduce, driver)   per-source keep/drop from k judged samples (classifier or LLM judge),
                         doc-level P(science) cut (per-domain strictness optional), global
                         exact + MinHash-LSH dedup over the
                         stored keys/signatures only (no text): writes work/decisions.json
    C (map, per shard)   keep the decided rows, drop the working columns: out/shard-N.parquet

`PHASES` is that list; `run_pipeline(cfg, executor)` walks it and an executor only provides
`map(fn, items)`: `LocalExecutor` (multiprocessing Pool, or inline with 1 worker) and
`RayExecutor` (`ray.remote` tasks; `ray.init(address=...)` or a local instance). The per-document
stages of phase A are the list `MAP_STAGES` of functions `(docs, cfg) -> docs`.

Resumable: every shard output and decisions.json is written to a temp file then `os.replace`d, so
a file that exists is complete; a rerun skips finished shards (and a finished phase B when its
config fingerprint matches). Killing a run loses at most the shards in flight. The work folder is
stamped with the phase-A config: resuming with other filter/shard settings is refused, while a
changed phase-B setting (thresholds, judge, dedup) re-decides and rewrites only the final shards.
Input planning is shards.py: plain JSONL shards seek to a byte offset, gzipped JSONL is re-read
from the top per shard and Parquet read whole per shard: split huge compressed inputs into several files.

Output schema (Parquet, one file per input shard, `out/shard-NNNNN.parquet`), read by the
training data readers:
    text            string   the document (after boilerplate-line cleanup)
    id              string   original id (or "<file stem>:<row>" when the input had none)
    source          string   input `source`, else the URL's domain, else the file stem
    domain          string   classifier label: math|physics|chemistry|life|earth|materials|none
    science_score   float32  classifier P(science)
    domain_probs    string   JSON {class: probability}
    filters_passed  list<string>  quality rules passed (all of filters.RULE_NAMES) + "validity"
    quality         string   JSON of the quality metrics (filters.quality_metrics)
    n_validity      int32    SMILES/sequences checked (all valid, else the row was dropped)
plus `out/_manifest.json` (config, counts per phase and per drop reason, domain decisions,
`input_errors`) and `out/_errors.jsonl`: one record per input row that could not be read
(not JSON, not UTF-8, no string `text`: {"file", "line", "row", "where": "file:line",
"error"}) and per .gz that breaks off; those rows are skipped and the run goes on.

CLI (`opens1 data build`, src/opens1/cli/data.py):

    opens1 data build docs.jsonl more.parquet -o corpus/ --shard-size 5000 --workers 2
    opens1 data build docs.jsonl -o corpus/ --executor ray --ray-address auto
    opens1 data build docs.jsonl -o corpus/ --judge-endpoint http://127.0.0.1:8000/v1 --domain-k 50
    opens1 data build docs.jsonl -o corpus/ --min-words 20 --min-science 0.3 --dedup-threshold 0.7
    opens1 data build docs.jsonl -o corpus/ --domain-min-science life=0.8,materials=0.3
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from opens1.common.atomic import atomic_write
from opens1.common.hashing import json_digest
from opens1.common.jsonl import write_jsonl
from opens1.corpus import dedup as D
from opens1.corpus import filters as F
from opens1.corpus.classify import LLMJudge, decide_domains, load_classifier
from opens1.corpus.executors import LocalExecutor
from opens1.corpus.shards import Shard, plan_shards, read_shard
from opens1.corpus.validity import check_record


@dataclass
class PipelineConfig:
    inputs: list[str]
    output: str
    work: str = ""  # default: <output>/_work
    shard_size: int = 10_000
    min_words: int = F.QualityConfig.min_words
    clean_lines: bool = True
    validity: bool = True
    classifier: str = "default"  # "default" (shipped), a model path, or "" to skip classification
    min_science: float = 0.5  # doc-level cut on P(science); 0 keeps all
    # Per-domain cut overriding min_science for documents whose most likely science is that domain:
    # Intern-S1 filters life science strictly and materials science loosely, because their natural
    # shares of the web differ by orders of magnitude (Intern-S1 report, data totals).
    domain_min_science: dict[str, float] = field(default_factory=dict)
    domain_k: int = 20  # samples judged per source
    domain_threshold: float = 0.3  # keep a source if >= this fraction of its samples is science
    judge_endpoint: str = ""  # OpenAI-compatible endpoint: the LLM judges sources instead
    judge_model: str = "default"
    dedup: bool = True
    dedup_threshold: float = D.DedupConfig.threshold
    num_perm: int = D.DedupConfig.num_perm
    ngram: int = D.DedupConfig.ngram
    seed: int = 0

    def __post_init__(self):
        if not self.work:
            self.work = str(Path(self.output) / "_work")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        cuts = [self.min_science, self.domain_threshold, *self.domain_min_science.values()]
        if not all(0.0 <= c <= 1.0 for c in cuts):
            raise ValueError(f"min_science, domain_threshold and domain_min_science must be in [0, 1], got {cuts}")

    PHASE_A_KEYS = ("inputs", "shard_size", "min_words", "clean_lines", "validity", "classifier", "num_perm",
                    "ngram", "seed")
    PHASE_B_KEYS = ("min_science", "domain_min_science", "domain_k", "domain_threshold", "judge_endpoint", "judge_model", "dedup",
                    "dedup_threshold")

    def fingerprint(self, phase: str = "b") -> str:
        """Hash of what phase A (or B, which includes A) depends on. Phase-A shards made under another
        fingerprint are refused; a changed phase-B config re-decides and rewrites the final shards."""
        keys = self.PHASE_A_KEYS + (self.PHASE_B_KEYS if phase == "b" else ())
        return json_digest({k: getattr(self, k) for k in keys}, length=16)


# ------------------------------------------------------------------- phase A: per-doc stages
# Each stage takes and returns the shard's documents, adding provenance fields. A stage rejects a
# document by setting doc["_drop"] = reason; later stages skip it, and run_phase_a counts the
# reasons and writes only the survivors.


def stage_clean(docs: list[dict], cfg: PipelineConfig) -> list[dict]:
    if cfg.clean_lines:
        for d in docs:
            d["text"] = F.clean_lines(d["text"])
    return docs


def stage_quality(docs: list[dict], cfg: PipelineConfig) -> list[dict]:
    qcfg = F.QualityConfig(min_words=cfg.min_words)
    for d in docs:
        m = F.quality_metrics(d["text"])
        fails = F.quality_check(m, qcfg)
        d["quality"] = json.dumps({k: round(v, 4) for k, v in m.items()})
        d["filters_passed"] = [r for r in F.RULE_NAMES if r not in fails]
        if fails:
            d["_drop"] = "quality:" + fails[0]
    return docs


def stage_validity(docs: list[dict], cfg: PipelineConfig) -> list[dict]:
    for d in docs:
        if "_drop" in d:
            continue
        res = check_record(d) if cfg.validity else None
        d["n_validity"] = res.n_checked if res else 0
        if res and not res.ok:
            d["_drop"] = "validity"
        elif res:
            d["filters_passed"].append("validity")
    return docs


@lru_cache(maxsize=4)
def _classifier(path: str):
    return load_classifier(None if path == "default" else path)


def stage_classify(docs: list[dict], cfg: PipelineConfig) -> list[dict]:
    live = [d for d in docs if "_drop" not in d]
    if not cfg.classifier:
        for d in live:
            d.update(domain="none", science_score=float("nan"), domain_probs="{}")
        return docs
    clf = _classifier(cfg.classifier)
    for d, p in zip(live, clf.predict([d["text"] for d in live])):
        d.update(domain=p.domain, science_score=p.science,
                 domain_probs=json.dumps({k: round(v, 4) for k, v in p.probs.items()}))
    return docs


def stage_signature(docs: list[dict], cfg: PipelineConfig) -> list[dict]:
    live = [d for d in docs if "_drop" not in d]
    hasher = D.MinHasher(cfg.num_perm, cfg.seed + 1)
    sigs = hasher.signatures([D.shingle_hashes(d["text"], cfg.ngram) for d in live])  # [N, P]
    for d, s in zip(live, sigs):
        d["exact_key"] = D.exact_key(d["text"])
        d["minhash"] = s.tobytes()
    return docs


MAP_STAGES: list[Callable[[list[dict], PipelineConfig], list[dict]]] = [
    stage_clean, stage_quality, stage_validity, stage_classify, stage_signature,
]
OUT_COLUMNS = ["text", "id", "source", "domain", "science_score", "domain_probs", "filters_passed", "quality",
               "n_validity"]
WORK_COLUMNS = OUT_COLUMNS + ["exact_key", "minhash"]


def _schema(work: bool):
    import pyarrow as pa

    fields = [("text", pa.string()), ("id", pa.string()), ("source", pa.string()), ("domain", pa.string()),
              ("science_score", pa.float32()), ("domain_probs", pa.string()),
              ("filters_passed", pa.list_(pa.string())), ("quality", pa.string()), ("n_validity", pa.int32())]
    if work:
        fields += [("exact_key", pa.string()), ("minhash", pa.binary())]
    return pa.schema(fields)


def _write_parquet(path: Path, rows: list[dict], work: bool, meta: dict | None = None) -> None:
    """Atomic Parquet write: a file at `path` is always complete."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema(work)
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    table = pa.table(cols, schema=schema)
    if meta:
        table = table.replace_schema_metadata({"opens1": json.dumps(meta)})
    atomic_write(path, write=lambda tmp: pq.write_table(table, tmp, compression="zstd"))


MAX_ERRORS_PER_SHARD = 1000


def run_phase_a(job: tuple[Shard, PipelineConfig]) -> dict:
    """Phase A on one shard; returns drop counts (and its bad-row records under "errors").
    Skips (reads them back) if already done."""
    import pyarrow.parquet as pq

    shard, cfg = job
    out = Path(cfg.work) / "a" / shard.name
    if out.is_file():
        return json.loads(pq.read_schema(out).metadata[b"opens1"])
    errors: list[dict] = []
    docs = read_shard(shard, errors)
    for stage in MAP_STAGES:
        docs = stage(docs, cfg)
    counts: dict = {"in": len(docs)}
    for d in docs:
        if "_drop" in d:
            counts[d["_drop"]] = counts.get(d["_drop"], 0) + 1
    kept = [d for d in docs if "_drop" not in d]
    counts["kept"] = len(kept)
    if errors:
        counts["bad_row"] = len(errors)
        counts["errors"] = errors[:MAX_ERRORS_PER_SHARD]  # the records, carried back in the shard's metadata
    _write_parquet(out, kept, work=True, meta=counts)
    return counts


# ------------------------------------------------------------------- phase B: global decisions


@lru_cache(maxsize=8)
def _shard_texts(path: str) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=["text"])["text"].to_pylist()


def _judge_rows(cfg: PipelineConfig, shards: list[Shard], table) -> Callable[[list[int]], list[bool]]:
    """Row-index judge: the LLM over the rows' text (read lazily) or the stored classifier scores."""
    if cfg.judge_endpoint:
        llm = LLMJudge(cfg.judge_endpoint, cfg.judge_model)
        shard_of = table["_shard"].to_numpy()
        row_of = table["_row"].to_numpy()

        def judge(rows: list[int]) -> list[bool]:
            texts = []
            for i in rows:  # samples of one source cluster in few shards: read each text column once
                texts.append(_shard_texts(str(Path(cfg.work) / "a" / shards[shard_of[i]].name))[int(row_of[i])])
            return llm(texts)

        return judge
    scores = table["science_score"].to_numpy(zero_copy_only=False)
    return lambda rows: [bool(scores[i] >= cfg.min_science) for i in rows]


def _top_science(probs_json: str) -> str:
    """The most likely science class in a stored domain_probs JSON ("none" if there is none)."""
    probs = {k: v for k, v in json.loads(probs_json or "{}").items() if k != "none"}
    return max(probs, key=probs.get) if probs else "none"


def run_phase_b(cfg: PipelineConfig, shards: list[Shard]) -> dict:
    """Domain decisions + doc-level cut + global dedup -> work/decisions.json (atomic)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(cfg.work) / "decisions.json"
    fp = cfg.fingerprint()
    if path.is_file():
        dec = json.loads(path.read_text())
        if dec.get("fingerprint") == fp:
            return dec
    parts = []
    for s in shards:
        cols = ["source", "science_score", "exact_key", "minhash"] + (["domain_probs"] if cfg.domain_min_science else [])
        t = pq.read_table(Path(cfg.work) / "a" / s.name, columns=cols)
        t = t.append_column("_shard", pa.array(np.full(len(t), s.index, dtype=np.int32)))
        parts.append(t.append_column("_row", pa.array(np.arange(len(t), dtype=np.int32))))
    table = pa.concat_tables(parts) if parts else None
    n = len(table) if table is not None else 0
    keep = np.ones(n, dtype=bool)
    reasons: dict[str, int] = {}
    domains = {}
    if n and cfg.classifier:
        sources = table["source"].to_pylist()
        decisions = decide_domains(sources, _judge_rows(cfg, shards, table), k=cfg.domain_k,
                                   threshold=cfg.domain_threshold, seed=cfg.seed)
        domains = {k: asdict(v) for k, v in decisions.items()}
        src_keep = np.array([decisions[s].keep for s in sources], dtype=bool)
        reasons["domain_dropped"] = int((~src_keep).sum())
        keep &= src_keep
        scores = table["science_score"].to_numpy(zero_copy_only=False)
        cut = np.full(n, cfg.min_science, dtype=np.float32)
        if cfg.domain_min_science:
            for i, probs in enumerate(table["domain_probs"].to_pylist()):
                top = _top_science(probs)
                if top in cfg.domain_min_science:
                    cut[i] = cfg.domain_min_science[top]
        low = keep & (scores < cut)
        reasons["low_science"] = int(low.sum())
        keep &= ~low
    if n and cfg.dedup:
        idx = np.nonzero(keep)[0]
        keys = table["exact_key"].to_pylist()
        seen: set[str] = set()
        survivors = []
        for i in idx:  # exact: first occurrence in shard order wins
            if keys[i] in seen:
                keep[i] = False
            else:
                seen.add(keys[i])
                survivors.append(i)
        reasons["exact_dup"] = len(idx) - len(survivors)
        if len(survivors) > 1:
            blobs = table["minhash"].to_pylist()
            sigs = np.stack([np.frombuffer(blobs[i], dtype=np.uint32) for i in survivors])  # [M, P]
            roots = D.lsh_clusters(sigs, cfg.dedup_threshold)
            dup = roots != np.arange(len(survivors))
            keep[np.asarray(survivors)[dup]] = False
            reasons["near_dup"] = int(dup.sum())
    shard_of = table["_shard"].to_numpy() if n else np.zeros(0, dtype=np.int32)
    row_of = table["_row"].to_numpy() if n else np.zeros(0, dtype=np.int32)
    per_shard = {s.name: row_of[(shard_of == s.index) & keep].tolist() for s in shards}
    dec = {"fingerprint": fp, "keep_rows": per_shard, "reasons": reasons, "domains": domains,
           "n_in": n, "n_kept": int(keep.sum())}
    for old in Path(cfg.output).glob("shard-*.parquet"):  # made under other decisions: stale
        old.unlink()
    atomic_write(path, json.dumps(dec))
    return dec


# ------------------------------------------------------------------------ phase C: final shards


def run_phase_c(job: tuple[Shard, PipelineConfig, list[int]]) -> int:
    import pyarrow.parquet as pq

    shard, cfg, rows = job
    out = Path(cfg.output) / shard.name
    if out.is_file():
        return pq.ParquetFile(out).metadata.num_rows
    t = pq.read_table(Path(cfg.work) / "a" / shard.name, columns=OUT_COLUMNS)
    kept = t.take(rows).to_pylist() if rows else []
    _write_parquet(out, kept, work=False)
    return len(kept)


# -------------------------------------------------------------------------------- executors


# ------------------------------------------------------------------------------ the pipeline

PHASES = ("A: map shards through MAP_STAGES", "B: reduce to decisions", "C: map shards to final output")


def _remove_stale_temps(cfg: PipelineConfig) -> None:
    """Temp files of a killed run are garbage: a finished file was renamed away from its temp name."""
    for folder in (Path(cfg.output), Path(cfg.work), Path(cfg.work) / "a"):
        if folder.is_dir():
            for p in folder.glob("*.tmp*"):
                p.unlink(missing_ok=True)


def _claim_work_dir(cfg: PipelineConfig) -> None:
    """Refuse to resume from phase-A shards built with a different filter/shard config."""
    stamp = Path(cfg.work) / "phase_a.json"
    fp = cfg.fingerprint("a")
    if stamp.is_file():
        old = json.loads(stamp.read_text())["fingerprint"]
        if old != fp:
            raise ValueError(f"{cfg.work} holds shards built with another config (fingerprint {old}, now {fp}): "
                             "use a new output folder or --work, or delete it")
        return
    atomic_write(stamp, json.dumps({"fingerprint": fp, "config": {k: getattr(cfg, k) for k in cfg.PHASE_A_KEYS}}))


def run_pipeline(cfg: PipelineConfig, executor=None) -> dict:
    """Run phases A, B, C with `executor` (default LocalExecutor); returns the manifest dict."""
    executor = executor or LocalExecutor()
    for p in cfg.inputs:
        if not Path(p).is_file():
            raise FileNotFoundError(f"no input file {p!r}")
    errors: list[dict] = []
    shards = plan_shards(cfg.inputs, cfg.shard_size, errors)
    _remove_stale_temps(cfg)
    _claim_work_dir(cfg)
    counts_a = executor.map(run_phase_a, [(s, cfg) for s in shards])
    dec = run_phase_b(cfg, shards)
    n_out = executor.map(run_phase_c, [(s, cfg, dec["keep_rows"][s.name]) for s in shards])
    phase_a: dict[str, int] = {}
    for c in counts_a:
        errors += c.pop("errors", [])
        for k, v in c.items():
            phase_a[k] = phase_a.get(k, 0) + v
    Path(cfg.output).mkdir(parents=True, exist_ok=True)
    write_jsonl(Path(cfg.output) / "_errors.jsonl", errors)
    manifest = {"config": asdict(cfg), "shards": [s.name for s in shards], "phase_a": phase_a,
                "phase_b": dec["reasons"], "domains": dec["domains"], "n_out": int(sum(n_out)),
                "input_errors": phase_a.get("bad_row", 0) + sum(e["row"] is None for e in errors)}
    atomic_write(Path(cfg.output) / "_manifest.json", json.dumps(manifest, indent=1))
    return manifest

"""The corpus pipeline end to end: schema, filtering, cross-shard dedup, resume, Ray executor."""

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from opens1.cli.data import build
from opens1.corpus import pipeline as P
from opens1.corpus.executors import LocalExecutor, RayExecutor
from opens1.corpus.shards import plan_shards, read_shard

DATA = Path(__file__).resolve().parents[2] / "bench" / "data"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data):
    """Real documents of four sources: LaTeX paper sections (science), GCIDE chemistry glossary
    pages (science), fortunes and news (not), with a cross-shard duplicate and a bad SMILES."""
    docs = []
    for p in sorted((shared_data / "text/latex_1706.03762").glob("*.tex")):
        docs.append({"id": p.stem, "source": "arxiv.org", "text": p.read_text()})
    with gzip.open(DATA / "gcide.jsonl.gz", "rt") as f:
        chem = [json.loads(l) for l in f if '"chemistry"' in l][:12]
    docs += [{"id": d["id"], "source": "chem-glossary.example", "text": d["text"]} for d in chem]
    with gzip.open(DATA / "nonscience.jsonl.gz", "rt") as f:
        other = [json.loads(l) for l in f]
    docs += [{"id": d["id"], "url": "https://fortunes.example/" + d["id"], "text": d["text"]}
             for d in other if d["source"].startswith("fortunes")][:20]
    docs += [{"id": d["id"], "source": "news.example", "text": d["text"]} for d in other if d["source"].startswith("news")][:12]
    docs.append({"id": "dup-of-chem0", "source": "chem-glossary.example", "text": chem[0]["text"] + " "})
    docs.append({"id": "bad-smiles", "source": "chem-glossary.example",
                 "text": chem[1]["text"] + "\nIts structure is <SMILES>C1CC(</SMILES>."})
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path, docs


def _cfg(corpus, out, **kw):
    base = dict(inputs=[str(corpus[0])], output=str(out), shard_size=12, min_words=20, min_science=0.5,
                domain_k=8, domain_threshold=0.3)
    base.update(kw)
    return P.PipelineConfig(**base)


def _read(out):
    return [r for f in sorted(Path(out).glob("shard-*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_build_filters_dedups_and_writes_schema(corpus, tmp_path):
    m = P.run_pipeline(_cfg(corpus, tmp_path / "out"), LocalExecutor(1))
    rows = _read(tmp_path / "out")
    assert set(rows[0]) == set(P.OUT_COLUMNS)
    ids = {r["id"] for r in rows}
    sources = {r["source"] for r in rows}
    assert "news.example" not in sources and "fortunes.example" not in sources  # judged non-science
    assert m["domains"]["fortunes.example"]["keep"] is False  # source derived from the URL domain
    assert "dup-of-chem0" not in ids and "bad-smiles" not in ids  # cross-shard exact dup, invalid SMILES
    assert m["phase_a"]["validity"] == 1 and m["phase_b"]["exact_dup"] == 1
    assert len(m["shards"]) == len(list((tmp_path / "out").glob("shard-*.parquet"))) > 3
    for r in rows:
        assert r["science_score"] >= 0.5 and r["domain"] != "none"
        assert "validity" in r["filters_passed"] and json.loads(r["quality"])["n_words"] >= 20
    assert m["n_out"] == len(rows) and len(rows) >= 10
    assert not list((tmp_path / "out").rglob("*.tmp*"))  # atomic writes left no temp files


def test_resume_skips_finished_shards(corpus, tmp_path):
    cfg = _cfg(corpus, tmp_path / "out")
    P.run_pipeline(cfg, LocalExecutor(1))
    outs = sorted((tmp_path / "out").glob("shard-*.parquet"))
    stamps = {p.name: p.stat().st_mtime_ns for p in outs}
    first = _read(tmp_path / "out")
    # Simulate a crash: one final shard and one phase-A shard missing, a stale temp file around.
    outs[1].unlink()
    (Path(cfg.work) / "a" / outs[2].name).unlink()
    (tmp_path / "out" / (outs[3].name + ".tmp123")).write_text("partial")
    P.run_pipeline(cfg, LocalExecutor(2))
    assert _read(tmp_path / "out") == first
    assert not list((tmp_path / "out").rglob("*.tmp*"))
    for p in outs:
        if p.name not in (outs[1].name,):
            assert p.stat().st_mtime_ns == stamps[p.name], p.name  # untouched, not rewritten


def test_changed_config_redecides_or_is_refused(corpus, tmp_path):
    out = tmp_path / "o"
    first = P.run_pipeline(_cfg(corpus, out), LocalExecutor(1))
    # Phase-B settings may change on resume: new decisions, final shards rewritten.
    m = P.run_pipeline(_cfg(corpus, out, dedup=False, domain_threshold=0.0, min_science=0.0), LocalExecutor(1))
    assert m["phase_b"]["domain_dropped"] == 0 and m["n_out"] == m["phase_a"]["kept"] > first["n_out"]
    assert len(_read(out)) == m["n_out"]
    # Phase-A settings may not: the stored shards were filtered differently.
    with pytest.raises(ValueError, match="another config"):
        P.run_pipeline(_cfg(corpus, out, min_words=5), LocalExecutor(1))
    m = P.run_pipeline(_cfg(corpus, tmp_path / "b", classifier="", dedup=False), LocalExecutor(1))
    assert m["phase_b"] == {} and m["n_out"] == m["phase_a"]["kept"]


class _Judge(BaseHTTPRequestHandler):
    """A stand-in LLM on an OpenAI-compatible endpoint: 'science' for texts about attention/softmax."""

    seen = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][-1]["content"].split("Text:\n", 1)[1]
        type(self).seen.append(text[:40])
        word = "science" if ("attention" in text.lower() or "softmax" in text.lower()) else "other"
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": word}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


def test_llm_judge_decides_sources(corpus, tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _Judge.seen = []
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        m = P.run_pipeline(_cfg(corpus, tmp_path / "llm", judge_endpoint=url, min_science=0.0, domain_k=4),
                           LocalExecutor(1))
    finally:
        server.shutdown()
    kept = {s for s, d in m["domains"].items() if d["keep"]}
    assert kept == {"arxiv.org"}  # the LLM, not the classifier, decided: glossary pages lack its keywords
    assert len(_Judge.seen) == sum(min(4, d["n_docs"]) for d in m["domains"].values())  # k per source
    assert {r["source"] for r in _read(tmp_path / "llm")} == {"arxiv.org"}


def test_gzip_and_parquet_inputs_shard_like_plain_jsonl(corpus, tmp_path):
    import pyarrow as pa

    gz = tmp_path / "docs.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(corpus[0].read_text())
    pq_path = tmp_path / "docs.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": d["id"], "text": d["text"], "source": d.get("source", "")}
                                         for d in corpus[1]]), pq_path)
    plain = plan_shards([str(corpus[0])], 7)
    assert [s.offset >= 0 for s in plain] == [True] * len(plain)
    for other in (gz, pq_path):
        shards = plan_shards([str(other)], 7)
        assert [(s.start, s.stop) for s in shards] == [(s.start, s.stop) for s in plain]
        for a, b in zip(plain, shards):
            assert [d["text"] for d in read_shard(a)] == [d["text"] for d in read_shard(b)]


def test_per_domain_strictness(corpus, tmp_path):
    base = P.run_pipeline(_cfg(corpus, tmp_path / "a", dedup=False), LocalExecutor(1))
    rows = _read(tmp_path / "a")
    top = [P._top_science(r["domain_probs"]) for r in rows]
    assert "chemistry" in top
    strict = P.run_pipeline(_cfg(corpus, tmp_path / "b", dedup=False, domain_min_science={"chemistry": 1.0}),
                            LocalExecutor(1))
    assert strict["n_out"] == base["n_out"] - top.count("chemistry")
    assert "chemistry" not in [P._top_science(r["domain_probs"]) for r in _read(tmp_path / "b")]
    with pytest.raises(ValueError, match="domain_min_science"):
        P.PipelineConfig(inputs=[], output="x", domain_min_science={"life": 2.0})


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError):
        P.run_pipeline(P.PipelineConfig(inputs=[str(tmp_path / "nope.jsonl")], output=str(tmp_path / "o")))
    with pytest.raises(ValueError, match="shard_size"):
        P.PipelineConfig(inputs=[], output="x", shard_size=0)


def test_cli_build(corpus, tmp_path):
    rc = build([str(corpus[0]), "-o", str(tmp_path / "cli"), "--shard-size", "20", "--workers", "1",
                 "--min-words", "20", "--no-dedup"])
    assert rc == 0 and (tmp_path / "cli" / "_manifest.json").is_file()


@pytest.mark.slow
def test_ray_executor_matches_local(corpus, tmp_path):
    ray = pytest.importorskip("ray")
    local = P.run_pipeline(_cfg(corpus, tmp_path / "local"), LocalExecutor(1))
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        m = P.run_pipeline(_cfg(corpus, tmp_path / "ray"), RayExecutor())
    finally:
        ray.shutdown()
    assert m["n_out"] == local["n_out"] and m["phase_a"] == local["phase_a"]
    assert [r["id"] for r in _read(tmp_path / "ray")] == [r["id"] for r in _read(tmp_path / "local")]


def _doc(i: int) -> str:
    text = (f"Document number {i} is about the light of the stars. It says that the spectra of the stars "
            f"show what they are made of, and that the light from a galaxy is shifted to the red when it "
            f"moves away from us. This is one of the ways that we know the universe is growing {i}.")
    return json.dumps({"id": f"d{i}", "text": text})


def test_bad_rows_and_broken_gzip_are_error_records_and_the_run_goes_on(tmp_path):
    """One bad row used to abort the whole build (and a truncated .gz or bad UTF-8 gave a
    traceback without the file name)."""
    plain = tmp_path / "docs.jsonl"
    plain.write_bytes("\n".join([_doc(0), "{not json", _doc(1), ""]).encode() + b"\n"
                      + b'{"id": "latin1", "text": "caf\xe9"}\n' + b'{"id": "no-text"}\n'
                      + (_doc(2) + "\n").encode())
    whole = gzip.compress("".join(_doc(i) + "\n" for i in range(10, 40)).encode())
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(whole[: len(whole) * 2 // 3])
    not_gzip = tmp_path / "fake.jsonl.gz"
    not_gzip.write_bytes(b"this is not gzip data at all")
    cfg = P.PipelineConfig(inputs=[str(plain), str(truncated), str(not_gzip)], output=str(tmp_path / "out"),
                           shard_size=4, min_words=5, classifier="", dedup=False, validity=False)
    m = P.run_pipeline(cfg, LocalExecutor(1))
    errors = [json.loads(x) for x in (tmp_path / "out" / "_errors.jsonl").read_text().splitlines()]
    by_where = {e["where"]: e["error"] for e in errors}
    assert "not valid JSON" in by_where[f"{plain}:2"]
    assert "not UTF-8 (byte 0xe9" in by_where[f"{plain}:5"]
    assert "'text' field" in by_where[f"{plain}:6"]
    assert any(w.startswith(f"{truncated}:") and "truncated or corrupt gzip" in e for w, e in by_where.items())
    assert "truncated or corrupt gzip" in by_where[f"{not_gzip}:1"]
    assert m["input_errors"] == len(errors) == 5
    ids = {r["id"] for r in _read(tmp_path / "out")}
    assert {"d0", "d1", "d2"} <= ids  # the good rows of the file with bad ones
    assert len([i for i in ids if i.startswith("d") and int(i[1:]) >= 10]) >= 10  # the readable part of the cut .gz
    assert m["phase_a"]["bad_row"] == 3


def test_cli_build_reports_bad_rows(tmp_path, capsys):
    p = tmp_path / "docs.jsonl"
    p.write_text(_doc(0) + "\n{oops\n" + _doc(1) + "\n")
    rc = build([str(p), "-o", str(tmp_path / "cli"), "--workers", "1", "--min-words", "5", "--no-dedup",
                 "--classifier", "none"])
    assert rc == 0
    assert f"see {tmp_path / 'cli' / '_errors.jsonl'}" in capsys.readouterr().err

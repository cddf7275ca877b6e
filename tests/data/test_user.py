"""Your own data (data/user.py): text and chat rows for training, verifiable items as an
environment, and bad rows named by file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opens1.data.user import (DataError, ItemsEnv, env_name, is_data_file, iter_rows, read_items, read_samples,
                              register_items)
from opens1.envs import get_env
from opens1.envs.registry import unregister

DOCS = Path(__file__).resolve().parents[2] / "docs" / "your-data"


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_example_chat_rows_read_with_images_and_tools():
    samples = read_samples([DOCS / "chat.jsonl"])
    assert len(samples) == 4 and all(s.messages for s in samples)
    image = samples[1].messages[0]["content"][0]
    assert image == {"type": "image", "image": str(DOCS / "aspirin.png")}  # relative to the file
    assert samples[2].messages[0]["content"][0]["image"].startswith("data:image/png;base64,")
    assert samples[3].meta["tools"][0]["function"]["name"] == "molar_mass"
    assert samples[3].messages[1]["tool_calls"][0]["function"]["name"] == "molar_mass"
    assert samples[0].meta["where"].endswith("chat.jsonl:1")


def test_chat_rows_become_sft_documents_with_images_and_a_tool_call():
    import opens1
    from opens1.config import get_preset
    from opens1.data.packing import IGNORE
    from opens1.data.sources import build_documents
    from opens1.processing.processor import configure

    tok = opens1.load_tokenizer()
    cfg = get_preset("tiny")
    cfg.text.vocab_size = -(-len(tok) // 64) * 64
    configure(tok, cfg)
    docs = build_documents(read_samples([DOCS / "chat.jsonl"]), "sft", tok, opens1.Processor(tok, cfg))
    assert len(docs) == 4
    assert docs[1].pixel_values is not None and docs[2].pixel_values is not None
    tool_doc = tok.decode(docs[3].input_ids.tolist())
    assert "molar_mass" in tool_doc and "18.015" in tool_doc  # the spec, the call and the tool's reply
    labelled = tok.decode(docs[3].input_ids[docs[3].labels != IGNORE].tolist())
    assert "18.015 g/mol" in labelled and "What is the molar mass" not in labelled  # loss on assistant turns


def test_data_build_parquet_is_read_as_text(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from opens1.corpus.pipeline import _schema

    schema = _schema(False)
    row = {f.name: None for f in schema}
    row.update(text="Albedo is the fraction of sunlight reflected.", id="a", source="wiki", domain="physics",
               science_score=0.9, domain_probs="{}", filters_passed=["validity"], quality="{}", n_validity=0)
    pq.write_table(pa.table({k: [v] for k, v in row.items()}, schema=schema), tmp_path / "shard-00000.parquet")
    (s,) = read_samples([tmp_path / "shard-00000.parquet"])
    assert s.text.startswith("Albedo") and s.meta["where"].endswith("shard-00000.parquet:row 1")


@pytest.mark.parametrize("line,message", [
    ("{bad json", "not JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"txt": "typo"}', "expected a string 'text' or a 'messages' list"),
    ('{"messages": [{"role": "bot", "content": "hi"}]}', "message 0 has role 'bot'"),
    ('{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}',
     "remote image URL"),
    ('{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "missing.png"}}]}]}',
     "image file"),
    ('{"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]}', "a tool call needs"),
    ('{"prompt": "p", "answer": "a"}', "use `opens1 rl --data` or `opens1 eval --data`"),
])
def test_bad_training_row_names_file_and_line(tmp_path, line, message):
    path = _jsonl(tmp_path / "d.jsonl", ['{"text": "fine"}', "", line])  # a blank line still counts
    with pytest.raises(DataError, match=message) as e:
        read_samples([path])
    assert str(e.value).startswith(f"{path}:3: ")


def test_items_env_splits_verifies_and_rescores_without_the_file(tmp_path):
    name = register_items(DOCS / "items.jsonl")
    try:
        assert name == "data/items" == env_name("items.jsonl")
        env = get_env(name)
        assert isinstance(env, ItemsEnv)
        assert (env.num_cases("train"), env.num_cases("heldout")) == (8, 4)  # the rows' own split
        case = env.case(0, "train")
        assert case.messages() == [{"role": "user", "content": "What is 12 * 7? End with 'Answer: <number>'."}]
        assert env.verify("Answer: 84", case).score == 1.0 and env.verify("Answer: 85", case).score == 0.0
        light = next(c for c in env.cases(8, "train") if c.meta["kind"] == "number" and c.meta["verify_options"])
        assert env.verify("Answer: 300000", light).score == 1.0  # options: rel_tol 0.01
        smiles = next(c for c in env.cases(4, "heldout") if c.meta["kind"] == "smiles")
        assert env.verify("Answer: C1=CC=CC=C1", smiles).score == 1.0  # graded by RDKit, not by string
    finally:
        unregister(name)
    # a re-score registers the name without the file: the verifier travels in the case
    register_items(None, name=name)
    try:
        from opens1.eval.harness import rescore_records

        rec = {"task": name, "case": {"id": case.id, "prompt": case.prompt, "reference": case.reference,
                                      "meta": case.meta}, "sample": 0, "generation": "Answer: 84", "score": 0.0}
        assert rescore_records([rec])[0]["score"] == 1.0
    finally:
        unregister(name)


def test_items_without_split_use_the_hash_rule_and_eval_takes_every_row(tmp_path):
    rows = [{"prompt": f"What is {i} + 1?", "answer": str(i + 1), "verifier": "number"} for i in range(40)]
    path = _jsonl(tmp_path / "sums.jsonl", rows)
    name = register_items(path)
    try:
        env = get_env(name)
        n_train, n_held = env.num_cases("train"), env.num_cases("heldout")
        assert n_train + n_held == 40 and 0 < n_held < 12
        register_items(path, all_rows=True)
        assert get_env(name).num_cases("heldout") == 40
    finally:
        unregister(name)


@pytest.mark.parametrize("row,message", [
    ({"prompt": "p"}, "missing answer"),
    ({"prompt": "", "answer": "a"}, "non-empty string"),
    ({"prompt": "p", "answer": "a", "verifier": "nubmer"}, "did you mean number"),
    ({"prompt": "p", "answer": "a", "options": [1]}, "'options' must be an object"),
    ({"prompt": "p", "answer": "a", "split": "test"}, "'split' must be train or heldout"),
])
def test_bad_item_names_file_and_line(tmp_path, row, message):
    path = _jsonl(tmp_path / "items.jsonl", [{"prompt": "ok", "answer": "1"}, row])
    with pytest.raises(DataError, match=message) as e:
        read_items(path)
    assert str(e.value).startswith(f"{path}:2: ")


def test_rows_of_gzip_and_missing_files(tmp_path):
    import gzip

    with gzip.open(tmp_path / "t.jsonl.gz", "wt") as f:
        f.write('{"text": "a"}\n{"text": "b"}\n')
    assert [w.rsplit(":", 1)[1] for w, _ in iter_rows(tmp_path / "t.jsonl.gz")] == ["1", "2"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        list(iter_rows(tmp_path / "none.jsonl"))
    assert is_data_file("a.parquet") and is_data_file("a.jsonl.gz") and not is_data_file("../shared/data")


def test_train_cli_stops_on_a_bad_row_with_one_line(tmp_path, capsys):
    from opens1.cli.train import main

    path = _jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "hi"}]},
                                            {"messages": [{"role": "bot", "content": "hi"}]}])
    rc = main(["--preset", "sft", "--data", str(path), "--steps", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"opens1 train: {path}:2: message 0 has role 'bot'; expected one of system, user, "
                               "assistant, tool"]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_cli_data_flags(tmp_path):
    from opens1.cli.train import _parser, resolve_config

    f = _jsonl(tmp_path / "c.jsonl", [{"text": "x"}])
    cfg = resolve_config(_parser().parse_args(["--data", str(f)]))
    assert (cfg.data_files, cfg.sources, cfg.data_root) == (str(f), "", None)
    cfg = resolve_config(_parser().parse_args(["--data", str(tmp_path), str(f), "--sources", "gsm8k"]))
    assert (cfg.data_files, cfg.sources, cfg.data_root) == (str(f), "gsm8k", str(tmp_path))
    cfg = resolve_config(_parser().parse_args(["--sources", f"gsm8k,{f}"]))  # a file among the sources
    assert (cfg.data_files, cfg.sources) == (str(f), "gsm8k")

"""The speedrun's report card from a report dict, without a run."""

import json

from opens1.speedrun.report import to_markdown, write_json, write_report


def _report() -> dict:
    return {"config": {"minutes": 3.0, "steps": {}, "seed": 0, "data": None},
            "git_revision": "abc", "machine": {"cpus": 2, "torch_threads": 1, "torch": "2.9", "load_average": [1.0]},
            "model": {"preset": "tiny", "parameters": 4_000_000, "active_parameters": 2_000_000,
                      "vocab_size": 1472, "tokenizer_size": 1450, "tied_embeddings": True},
            "wall_seconds": 170.0, "warnings": ["The pretrain stage ran only 3 steps."],
            "stages": {"pretrain": {"steps": 3, "tokens": 600, "seconds": 5.0, "loss": [9.0, 8.5, 8.0]}},
            "eval": {"chem/ring_count": {"score": 0.5, "items": 40, "prior": 0.25, "prior_answer": "2",
                                         "above_prior": 0.25, "stderr": 0.1, "answer_ce_bits": 1.0,
                                         "answer_entropy_bits": 2.0}},
            "rl_skipped": "no task qualified"}


def test_report_files_are_written_whole(tmp_path):
    report = _report()
    md = write_report(report, tmp_path)
    text = md.read_text(encoding="utf-8")
    assert text == to_markdown(report, ["loss.png", "eval.png"])
    assert "| pretrain | 3 | 600 | 5 | 9.000 | 8.000 |" in text and "+0.250 ± 0.100" in text
    assert "## Warnings" in text and "RL was skipped: no task qualified" in text
    assert (tmp_path / "loss.png").stat().st_size > 1000 and (tmp_path / "eval.png").is_file()
    assert json.loads(write_json(report, tmp_path).read_text()) == report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.png", "loss.png", "report.json", "report.md"]

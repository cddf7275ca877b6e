"""Quality heuristics on real text: scientific LaTeX passes, degraded copies of it fail."""

import json

import pytest

from opens1.cli.data import filter_docs
from opens1.corpus.filters import (QualityConfig, clean_lines, filter_documents, garble_score, quality_check,
                                   quality_metrics)


@pytest.fixture(scope="module")
def latex(shared_data):
    return (shared_data / "text/latex_1706.03762/model_architecture.tex").read_text()


def test_real_scientific_latex_passes_every_rule(latex):
    m = quality_metrics(latex)
    assert quality_check(m) == []
    assert m["n_words"] > 500 and m["garble"] == 0.0


def test_math_is_removed_before_word_rules():
    # Formula-dense but real prose: without the math cut, most "words" would have no letters.
    text = ("The energy of the state is $E_n = -13.6 / n^2$ eV and the wave function obeys "
            "$$ \\hat H \\psi = E \\psi , \\quad \\psi(0) = 1 , \\int |\\psi|^2 dx = 1 $$ "
            "so that the ground state with n = 1 has the lowest energy of all the bound states. ") * 4
    m = quality_metrics(text)
    assert m["alpha_words"] > 0.9
    assert "alpha_words" not in quality_check(m, QualityConfig(min_words=20, max_top_ngram={}, max_dup_ngram={}))


def test_repetition_and_garble_and_length_fail(latex):
    para = latex[:1500]
    assert {"dup_lines", "dup_ngram", "top_ngram"} & set(quality_check(quality_metrics("\n".join([para] * 5))))
    mojibake = latex.encode("utf-8").decode("latin-1")  # classic UTF-8-read-as-Latin-1 damage
    garbled = latex[:3000].replace("e", "\ufffd")
    assert garble_score(garbled) > 0.05 and "garble" in quality_check(quality_metrics(garbled))
    assert garble_score(mojibake) >= garble_score(latex)
    assert "min_words" in quality_check(quality_metrics("Too short a text."))
    bullets = "\n".join(f"- item {i} of the list with the and to" for i in range(80))
    assert "bullet_lines" in quality_check(quality_metrics(bullets))


def test_clean_lines_drops_boilerplate_only():
    text = "Real sentence about enzymes.\nWe use cookies to improve your experience.\nPlease enable JavaScript.\nMore text."
    assert clean_lines(text) == "Real sentence about enzymes.\nMore text."


def test_filter_cli_end_to_end(tmp_path, latex):
    src = tmp_path / "in.jsonl"
    docs = [{"id": "a", "text": latex}, {"id": "b", "text": "buy now " * 200}, {"id": "c", "text": latex[:9000]}]
    src.write_text("".join(json.dumps(d) + "\n" for d in docs))
    out, rej = tmp_path / "out.jsonl", tmp_path / "rej.jsonl"
    assert filter_docs([str(src), "-o", str(out), "--rejected", str(rej), "--classifier", "default",
                        "--min-science", "0.0"]) == 0
    kept = [json.loads(l) for l in out.read_text().splitlines()]
    assert [d["id"] for d in kept] == ["a", "c"]
    assert all(0.0 <= d["science_score"] <= 1.0 and d["quality_fails"] == [] for d in kept)
    assert json.loads(rej.read_text())["quality_fails"]


def test_science_text_is_not_garble_but_run_together_words_are():
    calc = "She pays 450-150-36-50-20-10=<<450-150-36-50-20-10=184>>184 dollars in total for the trip."
    assert garble_score(calc) == 0.0
    broken = "The " + "thisisrunthroughtextfromabrokenpdfextractionwithoutanyspaces" + " end of it."
    assert garble_score(broken) > 0.5
    money = "Tom has $400 in the box and spends $25 on food, so he has $375 left for the rest of the week."
    assert quality_metrics(money)["n_words"] >= 20  # dollars are money, not a $...$ formula


def test_filter_documents_cleans_and_splits(latex):
    docs = [{"id": "a", "text": latex + "\nWe use cookies to improve your experience."},
            {"id": "b", "text": "buy now " * 200}]
    kept, rejected = filter_documents(docs, QualityConfig())
    assert [d["id"] for d in kept] == ["a"] and "cookies" not in kept[0]["text"] and kept[0]["quality_fails"] == []
    assert [d["id"] for d in rejected] == ["b"] and rejected[0]["quality_fails"]
    kept, _ = filter_documents(docs[:1], QualityConfig(), clean=False)
    assert "cookies" in kept[0]["text"]

"""Page-level near-duplicate removal (corpus/pdf/dedup.py) on constructed documents."""

from __future__ import annotations

from opens1.corpus.pdf.dedup import dedup_pages

LICENCE = ("This work is licensed under a Creative Commons Attribution 4.0 International License, "
           "which permits use, sharing, adaptation, distribution and reproduction in any medium or format, "
           "as long as you give appropriate credit to the original authors and the source.")
CJK = "本文研究了在高温高压条件下水的相变行为，并通过分子动力学模拟给出了相图的完整描述与实验的比较结果。" * 2


def doc(name: str, pages: list[str]) -> dict:
    return {"stem": name, "pages": pages,
            "records": [{"doc": name, "page": i + 1} for i in range(len(pages))]}


def prose(seed: int) -> str:
    words = [f"w{seed}x{i}" for i in range(60)]
    return " ".join(words)


def test_later_copies_point_at_the_first_and_short_pages_are_kept():
    a = doc("a", [prose(1), LICENCE])
    b = doc("b", [LICENCE + " ", "Short page.", prose(2)])
    c = doc("c", [LICENCE.upper(), "Short page."])  # case differs: still the same shingles
    assert dedup_pages([a, b, c], 0.85) == 2
    dropped = [(r["doc"], r["page"], r["duplicate_of"]) for d in (a, b, c) for r in d["records"] if r.get("dropped")]
    assert dropped == [("b", 1, "a#2"), ("c", 1, "a#2")]


def test_cjk_pages_are_compared_by_characters():
    a, b = doc("a", [CJK]), doc("b", [CJK.replace("。", "！")])
    assert dedup_pages([a, b], 0.85) == 1
    assert b["records"][0]["duplicate_of"] == "a#1"


def test_rerun_recomputes_and_other_drops_are_left_alone():
    a = doc("a", [LICENCE])
    b = doc("b", [LICENCE])
    b["records"][0].update(dropped="duplicate", duplicate_of="zz#9")  # from an earlier run
    a["records"][0]["dropped"] = "garbled"
    assert dedup_pages([a, b], 0.85) == 0  # the only other copy is dropped for another reason
    assert a["records"][0]["dropped"] == "garbled" and "dropped" not in b["records"][0]
    assert "duplicate_of" not in b["records"][0]

import time

from opens1.rewards.extract import MAX_TAIL, extract, find_answer_line, find_boxed, strip_thinking


def test_only_text_after_think_counts():
    ex = extract("<think>Answer: 7</think>The result is \\boxed{3}")
    assert ex.answer == "3" and ex.how == "boxed"
    # An answer only inside the reasoning is not an answer.
    ex = extract("<think>\\boxed{7}</think>I am not sure.")
    assert ex.how == "tail" and "7" not in ex.answer


def test_unclosed_think_is_no_answer():
    assert strip_thinking("<think>still thinking \\boxed{2}") is None
    assert extract("<think>still thinking \\boxed{2}").answer is None
    assert extract("<think>x</think><think>y").answer == "<think>y"  # closed once: text after last close


def test_boxed_nested_and_last():
    assert find_boxed("a \\boxed{1} then \\boxed{\\frac{1}{\\sqrt{2}}}") == "\\frac{1}{\\sqrt{2}}"
    assert find_boxed("\\boxed{unbalanced") is None
    assert find_boxed("\\fbox{B}") == "B"


def test_answer_line_variants():
    assert find_answer_line("so... Answer: 42.") == "42"
    assert find_answer_line("The final answer is **C**.") == "C"
    assert find_answer_line("answer = $3.2$ kJ") == "3.2$ kJ"
    assert find_answer_line("no marker here") is None


def test_empty_and_none():
    assert extract("").how == "empty" and extract(None).answer is None
    assert extract("<think>a</think>   ").how == "empty"


def test_huge_prediction_is_bounded():
    text = "la " * 2_000_000 + "Answer: 5"  # ~6 MB
    t = time.perf_counter()
    ex = extract(text)
    assert ex.answer == "5"
    assert len(ex.body) <= MAX_TAIL
    # Pathological input for naive regexes: many "answer is" with no newline.
    ex2 = extract("answer is " * 300_000)
    assert ex2.answer is not None
    assert time.perf_counter() - t < 30  # generous bound: only guards against catastrophic backtracking

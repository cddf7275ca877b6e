"""Math environments: GSM8K (numeric) and MATH-500 (symbolic, math-verify).

GSM8K ships its own train/test split; we use it (held-out = test) and drop train
questions that also occur in test. MATH-500 *is* a test split (a benchmark), so
all of it is held-out: training on a benchmark's items would make its score
meaningless. Difficulty: GSM8K by the number of solution steps, MATH by level.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from opens1.common.paths import has_data, open_data
from opens1.envs.base import ANSWER_FORMAT, ItemEnv, split_items

_CALC_RE = re.compile(r"<<[^>]*>>")  # GSM8K calculator annotations


def _jsonl(root, relpath: str) -> list[dict]:
    with open_data(root, relpath) as f:
        return [json.loads(line) for line in f if line.strip()]


def _gsm_item(row: dict) -> dict:
    solution, _, answer = row["answer"].rpartition("####")
    steps = len([ln for ln in solution.strip().splitlines() if ln.strip()])
    diff = "easy" if steps <= 2 else "medium" if steps <= 4 else "hard"
    return {"key": " ".join(row["question"].split()), "question": row["question"],
            "solution": _CALC_RE.sub("", solution).strip(), "answer": answer.strip().replace(",", ""),
            "difficulty": diff}


@lru_cache(maxsize=4)
def _gsm_split(root) -> dict:
    return split_items([_gsm_item(r) for r in _jsonl(root, "qa/gsm8k_train.jsonl")],
                       [_gsm_item(r) for r in _jsonl(root, "qa/gsm8k_test.jsonl")])


class GSM8KEnv(ItemEnv):
    name, domain, kind = "math/gsm8k", "math", "number"
    verify_options = {"rel_tol": 1e-6}

    @classmethod
    def available(cls, data_root=None):
        return has_data(data_root, "qa/gsm8k_train.jsonl") and has_data(data_root, "qa/gsm8k_test.jsonl")

    def _load(self):
        return _gsm_split(self.data_root)

    def _build(self, item, split, index):
        prompt = item["question"] + "\n" + ANSWER_FORMAT.format(what="number")
        return self._make_case(split, index, item["key"], prompt, item["answer"], item["difficulty"],
                               source="gsm8k", solution=item["solution"])

    def sft_response(self, case):
        return f"{case.meta['solution']}\nAnswer: {case.reference}"


@lru_cache(maxsize=4)
def _math500_split(root) -> dict:
    items = []
    for r in _jsonl(root, "qa/math500_test.jsonl"):
        level = int(r.get("level", 3))
        items.append({"key": " ".join(r["problem"].split()), "problem": r["problem"],
                      "solution": r["solution"], "answer": r["answer"], "subject": r.get("subject", ""),
                      "difficulty": "easy" if level <= 2 else "medium" if level == 3 else "hard"})
    return split_items([], items)  # a benchmark: everything is held-out


class Math500Env(ItemEnv):
    name, domain, kind = "math/math500", "math", "math"

    @classmethod
    def available(cls, data_root=None):
        return has_data(data_root, "qa/math500_test.jsonl")

    def _load(self):
        return _math500_split(self.data_root)

    def _build(self, item, split, index):
        prompt = item["problem"] + "\n" + ANSWER_FORMAT.format(what="answer in LaTeX")
        return self._make_case(split, index, item["key"], prompt, item["answer"], item["difficulty"],
                               source="math500", subject=item["subject"], solution=item["solution"])

    def sft_response(self, case):
        return f"{case.meta['solution']}\nAnswer: {case.reference}"


# the environments this module contributes to the registry (opens1.envs.registry)
ENVS = (GSM8KEnv, Math500Env)

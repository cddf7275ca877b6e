"""Physics and physical-chemistry problems with units, from SciBench.

SciBench problems come from textbooks, so they are test data: they are read at
run time from a data root that contains `qa/scibench/` (e.g. `../shared/data`)
and are never copied into the package. Without such a root the environment is
unavailable (`available()` is False; `get_env` raises FileNotFoundError).

The answer is a number with a unit; the `number` verifier converts units
(kJ/mol vs J/mol, atm vs kPa) and accepts SciBench's 5% relative tolerance.
Held-out = hash(problem text) % 10 == 0; difficulty = problem length.
"""

from __future__ import annotations

import json
from functools import lru_cache

from opens1.common.paths import data_root, has_data
from opens1.envs.base import ANSWER_FORMAT, ItemEnv, split_items
from opens1.rewards.units import clean_latex, parse_unit

# Physics and chemistry books only (calculus/diff/stat are math).
SOURCES = ("fund", "class", "thermo", "quan", "matter", "atkins", "chemmc")


@lru_cache(maxsize=4)
def _scibench_split(root) -> dict:
    items = []
    base = data_root(root) / "qa" / "scibench"
    for src in SOURCES:
        path = base / f"{src}.json"
        if not path.is_file():
            continue
        for row in json.loads(path.read_text(encoding="utf-8")):
            try:
                value = float(row["answer_number"])
            except (TypeError, ValueError):
                continue
            unit_text = clean_latex(row.get("unit") or "")
            unit_ok = parse_unit(unit_text) is not None
            text = row["problem_text"].strip()
            diff = "easy" if len(text) < 250 else "medium" if len(text) < 500 else "hard"
            items.append({"key": " ".join(text.split()), "problem": text, "value": value,
                          "unit": unit_text if unit_ok else "", "source": src, "difficulty": diff})
    return split_items(items)


class SciBenchEnv(ItemEnv):
    name, domain, kind = "physics/scibench", "physics", "number"
    verify_options = {"rel_tol": 0.05}

    @classmethod
    def available(cls, data_root=None):
        return data_root is not None and has_data(data_root, "qa/scibench/fund.json")

    def _load(self):
        return _scibench_split(str(self.data_root))

    def _build(self, item, split, index):
        unit = item["unit"]
        what = f"number in {unit}" if unit else "number"
        prompt = item["problem"] + "\n" + ANSWER_FORMAT.format(what=what)
        ref = {"value": item["value"], "unit": unit or None}
        return self._make_case(split, index, item["key"], prompt, ref, item["difficulty"],
                               source=f"scibench/{item['source']}")

    def sft_response(self, case):
        value, unit = case.reference["value"], case.reference["unit"] or ""
        return f"Applying the relevant relation with consistent units.\nAnswer: {value:g} {unit}".rstrip()


# the environments this module contributes to the registry (opens1.envs.registry)
ENVS = (SciBenchEnv,)

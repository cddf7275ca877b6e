"""Procedurally generated logic environments (InternBootcamp-style puzzles).

Each case is drawn from an RNG seeded by (env, split, index, difficulty, attempt),
so the same arguments always give the same puzzle, and the split is decided by the
hash of the puzzle's identity key: a held-out puzzle can never be generated for
training. Puzzles with many valid answers (Sudoku, SAT) are verified by checking
the constraints, not by comparing with one stored solution.
"""

from __future__ import annotations

import re

from opens1.envs.base import ANSWER_FORMAT, ProceduralEnv
from opens1.rewards import VerifyResult
from opens1.rewards.extract import extract

_INT_RE = re.compile(r"-?\d+")


def _answer(prediction) -> tuple[str | None, str]:
    ex = extract(prediction)
    return ex.answer, ex.how


class ArithmeticChainEnv(ProceduralEnv):
    name, domain, kind = "logic/arithmetic_chain", "logic", "number"
    _steps = {"easy": 3, "medium": 6, "hard": 10}

    def _generate(self, rng, difficulty):
        value = rng.randint(1, 20)
        ops, trace = [], []
        for _ in range(self._steps[difficulty]):
            op = rng.choice("+-*" if difficulty == "hard" else "+-")
            n = rng.randint(2, 9) if op == "*" else rng.randint(1, 50)
            new = value + n if op == "+" else value - n if op == "-" else value * n
            word = {"+": "add", "-": "subtract", "*": "multiply by"}[op]
            ops.append(f"{word} {n}")
            trace.append(f"{value} {op} {n} = {new}")
            value = new
        start = trace[0].split()[0]
        prompt = (f"Start with {start}, then {', then '.join(ops)}. What is the result? "
                  + ANSWER_FORMAT.format(what="integer"))
        return f"{start}|{'|'.join(ops)}", prompt, str(value), {"trace": trace}

    def sft_response(self, case):
        return "\n".join(case.meta["trace"]) + f"\nAnswer: {case.reference}"


class SortingEnv(ProceduralEnv):
    name, domain, kind = "logic/sorting", "logic", "list"
    _sizes = {"easy": 5, "medium": 10, "hard": 20}

    def _generate(self, rng, difficulty):
        lo = -99 if difficulty == "hard" else 0  # negatives trip up digit-wise sorting
        xs = [rng.randint(lo, 99) for _ in range(self._sizes[difficulty])]
        prompt = (f"Sort these numbers in ascending order: {', '.join(map(str, xs))}. "
                  + ANSWER_FORMAT.format(what="comma-separated numbers"))
        return ",".join(map(str, xs)), prompt, ", ".join(map(str, sorted(xs))), {}

    def verify(self, prediction, case):
        ans, how = _answer(prediction)
        if ans is None:
            return VerifyResult(0.0, f"no answer ({how})")
        # Any separator is fine ("1, 2", "[1 2]"): only the integers and their order count.
        got = [int(x) for x in _INT_RE.findall(ans)]
        want = [int(x) for x in _INT_RE.findall(case.reference)]
        ok = got == want
        return VerifyResult(1.0 if ok else 0.0, "sorted correctly" if ok else "wrong order or items", ans[:200])

    def sft_response(self, case):
        return f"Ordering from smallest to largest.\nAnswer: {case.reference}"


def _sudoku_ok(grid: list[int]) -> bool:
    """A complete 4x4 grid with 1..4 once per row, column and 2x2 box."""
    rows = [grid[4 * r:4 * r + 4] for r in range(4)]
    cols = [grid[c::4] for c in range(4)]
    boxes = [[grid[4 * (br + i) + bc + j] for i in range(2) for j in range(2)] for br in (0, 2) for bc in (0, 2)]
    return all(sorted(g) == [1, 2, 3, 4] for g in rows + cols + boxes)


def _count_solutions(puzzle: list[int], limit: int = 2) -> int:
    try:
        i = puzzle.index(0)
    except ValueError:
        return 1 if _sudoku_ok(puzzle) else 0
    total = 0
    r, c = divmod(i, 4)
    for v in range(1, 5):
        box = [4 * (r // 2 * 2 + a) + c // 2 * 2 + b for a in range(2) for b in range(2)]
        if v in puzzle[4 * r:4 * r + 4] or v in puzzle[c::4] or any(puzzle[k] == v for k in box):
            continue
        puzzle[i] = v
        total += _count_solutions(puzzle, limit - total)
        puzzle[i] = 0
        if total >= limit:
            break
    return total


class SudokuMiniEnv(ProceduralEnv):
    name, domain, kind = "logic/sudoku_mini", "logic", "sudoku"
    _blanks = {"easy": 4, "medium": 8, "hard": 11}

    def _generate(self, rng, difficulty):
        # A random valid grid: relabel digits and permute rows/cols within bands.
        base = [1, 2, 3, 4, 3, 4, 1, 2, 2, 1, 4, 3, 4, 3, 2, 1]
        perm = rng.sample([1, 2, 3, 4], 4)
        grid = [perm[v - 1] for v in base]
        rows = [grid[4 * r:4 * r + 4] for r in range(4)]
        band = rng.sample([0, 1], 2)
        rows = [rows[2 * b + i] for b in band for i in rng.sample([0, 1], 2)]
        grid = [v for row in rows for v in row]
        puzzle = grid[:]
        cells = list(range(16))
        rng.shuffle(cells)
        blanks = 0
        # Blank cells one by one, keeping only blanks that leave a unique solution, so the
        # stored solution is *the* answer (the verifier still accepts any valid grid).
        for cell in cells:
            if blanks == self._blanks[difficulty]:
                break
            keep, puzzle[cell] = puzzle[cell], 0
            if _count_solutions(puzzle[:]) != 1:
                puzzle[cell] = keep
            else:
                blanks += 1
        text = "\n".join(" ".join(str(v) if v else "." for v in puzzle[4 * r:4 * r + 4]) for r in range(4))
        prompt = ("Solve this 4x4 Sudoku (digits 1-4 once in every row, column and 2x2 box; '.' is empty):\n"
                  + text + "\nGive the solved grid as 16 digits, row by row. " + ANSWER_FORMAT.format(what="16 digits"))
        return "".join(map(str, puzzle)), prompt, "".join(map(str, grid)), {"puzzle": "".join(map(str, puzzle))}

    def verify(self, prediction, case):
        ans, how = _answer(prediction)
        if ans is None:
            return VerifyResult(0.0, f"no answer ({how})")
        digits = [int(ch) for ch in ans if ch.isdigit()]
        if len(digits) != 16:
            return VerifyResult(0.0, f"expected 16 digits, got {len(digits)}", ans[:60])
        givens = case.meta["puzzle"]
        if any(g != "0" and int(g) != d for g, d in zip(givens, digits)):
            return VerifyResult(0.0, "changes a given digit", ans[:60])
        ok = _sudoku_ok(digits)
        return VerifyResult(1.0 if ok else 0.0, "valid solution" if ok else "breaks a Sudoku rule", ans[:60])

    def sft_response(self, case):
        return f"Filling each empty cell with the only digit its row, column and box allow.\nAnswer: {case.reference}"


class SatEnv(ProceduralEnv):
    """Random 3-SAT with a planted solution (so it is satisfiable); any model is accepted."""

    name, domain, kind = "logic/sat", "logic", "sat"
    _vars = {"easy": 4, "medium": 7, "hard": 10}

    def _generate(self, rng, difficulty):
        n = self._vars[difficulty]
        # Planted model: only clauses it satisfies are kept, so the formula is satisfiable.
        # Ratio 4 clauses/variable sits near the 3-SAT phase transition (~4.26): hard-ish.
        planted = [rng.random() < 0.5 for _ in range(n)]
        clauses = []
        while len(clauses) < int(4.0 * n):
            vs = rng.sample(range(n), 3)
            lits = [(v, rng.random() < 0.5) for v in vs]  # (variable, negated)
            if any(planted[v] != neg for v, neg in lits):  # satisfied by the planted model
                clauses.append(lits)
        text = " AND ".join("(" + " OR ".join(("NOT " if neg else "") + f"x{v + 1}" for v, neg in c) + ")"
                            for c in clauses)
        prompt = (f"Find values for x1..x{n} that make this formula true:\n{text}\n"
                  f"Give the values as a string of {n} bits, x1 first (1 = true). "
                  + ANSWER_FORMAT.format(what="bits"))
        ref = "".join("1" if b else "0" for b in planted)
        return text, prompt, ref, {"clauses": [[[v, neg] for v, neg in c] for c in clauses], "n_vars": n}

    def verify(self, prediction, case):
        ans, how = _answer(prediction)
        if ans is None:
            return VerifyResult(0.0, f"no answer ({how})")
        bits = [ch == "1" for ch in ans if ch in "01"]
        n = case.meta["n_vars"]
        if len(bits) != n:
            return VerifyResult(0.0, f"expected {n} bits, got {len(bits)}", ans[:60])
        ok = all(any(bits[v] != neg for v, neg in c) for c in case.meta["clauses"])
        return VerifyResult(1.0 if ok else 0.0, "satisfies every clause" if ok else "a clause is false", ans[:60])

    def sft_response(self, case):
        return f"Checking each clause against a candidate assignment.\nAnswer: {case.reference}"


_WORDS = ("strawberry", "molecule", "protein", "electron", "catalyst", "genome", "reaction", "entropy",
          "isotope", "neutron", "enzyme", "polymer", "spectrum", "quantum", "crystal", "ribosome")


class CountingEnv(ProceduralEnv):
    name, domain, kind = "logic/counting", "logic", "number"
    _nwords = {"easy": 1, "medium": 3, "hard": 8}

    def _generate(self, rng, difficulty):
        words = [rng.choice(_WORDS) for _ in range(self._nwords[difficulty])]
        text = " ".join(words)
        # Letter counting is a known tokenizer blind spot; sorted() keeps the draw deterministic.
        letter = rng.choice(sorted(set(text.replace(" ", ""))))
        prompt = (f"How many times does the letter '{letter}' appear in: \"{text}\"? "
                  + ANSWER_FORMAT.format(what="integer"))
        return f"{letter}|{text}", prompt, str(text.count(letter)), {"letter": letter, "text": text}

    def sft_response(self, case):
        per = ", ".join(f"{w}: {w.count(case.meta['letter'])}" for w in case.meta["text"].split())
        return f"Counting '{case.meta['letter']}' word by word: {per}.\nAnswer: {case.reference}"


# the environments this module contributes to the registry (opens1.envs.registry)
ENVS = (
    ArithmeticChainEnv, SortingEnv, SudokuMiniEnv, SatEnv, CountingEnv,
)

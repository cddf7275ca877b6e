"""Environment interface and split manifests (the registry of names: `opens1.envs.registry`).

An environment (InternBootcamp's "bootcamp") turns an index into a task instance
(`Case`: prompt, reference, meta), grades a response against it (`verify`), and,
where a correct answer can be written programmatically, produces a short worked
target response (`sft_response`) so the same environment feeds SFT data, RL
prompts and evaluation.

Splits are FIXED and content-addressed, so no held-out item can reach training:
- a source with its own test split (GSM8K, MOSES, USPTO) uses it as held-out, and
  the train side drops any item whose identity key also occurs in held-out;
- otherwise held-out = `stable_hash(item_key) % 10 == 0`, where the key is the
  item's identity (canonical SMILES, protein sequence, problem text, generated
  puzzle parameters), not its row number, so re-ordering or re-sampling a file
  cannot move an item across the split.
`stable_hash` is SHA-256 (Python's `hash()` is salted per process).

Procedural environments draw a case from an RNG seeded by (env, split, index,
attempt) and redraw until the case's key hashes into the requested split. Their
held-out split is the sequence of *distinct* keys so drawn (a small puzzle space,
e.g. one-word letter counting, would otherwise repeat items and inflate n).

Answer balance: an environment may list its `answer_classes`. An item environment then
orders each split round-robin over the classes (so any prefix of train, the part a
short run trains on, is balanced) and caps every class of the held-out split at
`heldout_per_class` items (and of train at `train_per_class`: RL draws train cases
uniformly, and on the natural answer mix it drifted towards the common answers); a procedural one draws case i with answer class
i % len(answer_classes). The answer prior (always the most common answer) of a
balanced split is about 1 / number of classes, so a score above it is skill.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from opens1.rewards import VerifyResult, verify

SPLITS = ("train", "heldout")
DIFFICULTIES = ("easy", "medium", "hard")
HELDOUT_MOD = 10

# The instruction every prompt ends with: a tiny model needs the format spelled out.
ANSWER_FORMAT = "End your response with a final line of the form 'Answer: <{what}>'."


def stable_hash(key: str) -> int:
    """A process-independent 64-bit hash of an item key."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def is_heldout(key: str) -> bool:
    return stable_hash(key) % HELDOUT_MOD == 0


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def check_difficulty(difficulty: str | None) -> None:
    if difficulty is not None and difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES} or None, got {difficulty!r}")


@dataclass(frozen=True)
class Case:
    """One task instance. `prompt` is a string or OpenAI-style chat messages."""

    id: str
    prompt: str | list[dict]
    reference: Any
    meta: dict = field(default_factory=dict)  # source, difficulty, split, key, ...

    def messages(self) -> list[dict]:
        """The prompt as chat messages (a string prompt becomes one user turn)."""
        if isinstance(self.prompt, str):
            return [{"role": "user", "content": self.prompt}]
        return list(self.prompt)


class Env:
    """Base environment. Subclasses set `name`, `domain`, `kind` (verifier) and
    implement `num_cases` / `case` (or use ItemEnv / ProceduralEnv below)."""

    name: str = ""
    domain: str = ""
    kind: str = "exact"
    verify_options: dict = {}
    description: str = ""
    # Answer balance (see the module docstring): the answer classes a procedural environment
    # draws in turn; an item environment sets `balanced` and `heldout_per_class` instead.
    answer_classes: tuple = ()

    def __init__(self, data_root=None):
        self.data_root = data_root

    @classmethod
    def available(cls, data_root=None) -> bool:
        """Whether this environment's data exists under `data_root`."""
        return True

    def num_cases(self, split: str = "train", difficulty: str | None = None) -> int:
        raise NotImplementedError

    def case(self, index: int, split: str = "train", difficulty: str | None = None) -> Case:
        raise NotImplementedError

    def cases(self, n: int, split: str = "train", difficulty: str | None = None, start: int = 0) -> list[Case]:
        """Cases start..start+n-1 (fewer where the split is smaller)."""
        out = []
        for i in range(start, start + n):
            if i >= self.num_cases(split, difficulty):  # re-read: a procedural held-out split learns its size
                break
            try:
                out.append(self.case(i, split, difficulty))
            except IndexError:  # a procedural held-out split ran out of distinct items
                break
        return out

    def verify(self, prediction: str | None, case: Case) -> VerifyResult:
        # Per-case options (stored in meta) override the environment's defaults.
        opts = {**self.verify_options, **case.meta.get("verify_options", {})}
        return verify(self.kind, prediction, case.reference, **opts)

    def sft_response(self, case: Case) -> str | None:
        """A correct, short worked response ending in the expected answer format."""
        return None

    def _make_case(self, split: str, index: int, key: str, prompt, reference, difficulty: str,
                   *, source: str, **meta) -> Case:
        # The id derives from the identity key, not the index: it survives re-ordering
        # and lets two eval runs be joined item by item.
        cid = f"{self.name}/{split}/{stable_hash(key) % 16**10:010x}"
        return Case(cid, prompt, reference,
                    {"env": self.name, "source": source, "difficulty": difficulty, "split": split,
                     "index": index, "key": key, "kind": self.kind, **meta})


class ItemEnv(Env):
    """An environment over a fixed list of items (dataset rows), split by `_load`.

    Subclasses implement `_load() -> {"train": [item...], "heldout": [...]}`, where
    each item is a dict with at least `key` and `difficulty`, and `_build(item, split,
    index) -> Case`. With `balanced = True` they also implement `item_answer(item)`, and
    the splits are ordered round-robin over answers, held-out capped at
    `heldout_per_class` items per answer and train at `train_per_class` (0: no cap), so that
    drawing train cases uniformly (as RL does) is balanced too."""

    _cache: dict = {}
    balanced: bool = False
    heldout_per_class: int = 0
    train_per_class: int = 0

    def item_answer(self, item: dict) -> str:
        """The answer of an item (its class for balancing); needed when `balanced`."""
        raise NotImplementedError

    def _balance(self, data: dict[str, list[dict]]) -> dict[str, list[dict]]:
        out = {}
        for split, items in data.items():
            groups: dict[str, list[dict]] = {}
            for it in items:  # file order within a class: deterministic
                groups.setdefault(str(self.item_answer(it)), []).append(it)
            cap = self.heldout_per_class if split == "heldout" else self.train_per_class
            if cap:
                groups = {a: g[:cap] for a, g in groups.items()}
            out[split] = round_robin(list(groups.values()))
        return out

    def _load(self) -> dict[str, list[dict]]:
        raise NotImplementedError

    def _build(self, item: dict, split: str, index: int) -> Case:
        raise NotImplementedError

    def _items(self, split: str, difficulty: str | None) -> list[dict]:
        check_split(split)
        check_difficulty(difficulty)
        # Loading canonicalises thousands of SMILES: do it once per class and data root,
        # and pre-filter every difficulty so case(i, difficulty=d) is O(1).
        ck = (type(self).__name__, str(self.data_root))
        if ck not in ItemEnv._cache:
            data = self._load()
            if self.balanced:
                data = self._balance(data)
            ItemEnv._cache[ck] = {s: {None: data[s], **{d: [it for it in data[s] if it["difficulty"] == d]
                                                        for d in DIFFICULTIES}} for s in SPLITS}
        return ItemEnv._cache[ck][split][difficulty]

    def num_cases(self, split: str = "train", difficulty: str | None = None) -> int:
        return len(self._items(split, difficulty))

    def manifest(self, split: str) -> list[str]:
        """The identity keys of a split, sorted: the split manifest."""
        return sorted(it["key"] for it in self._items(split, None))

    def manifest_digest(self, split: str) -> str:
        """SHA-256 of the manifest: pin it to notice any change of a split."""
        return hashlib.sha256("\n".join(self.manifest(split)).encode("utf-8")).hexdigest()

    def case(self, index: int, split: str = "train", difficulty: str | None = None) -> Case:
        items = self._items(split, difficulty)
        if not items:
            raise IndexError(f"{self.name}: no {split} items at difficulty {difficulty}")
        if not 0 <= index < len(items):
            raise IndexError(f"{self.name}: index {index} out of range for {len(items)} {split} items")
        return self._build(items[index], split, index)


def round_robin(groups: Sequence[Sequence]) -> list:
    """[[a1, a2, a3], [b1], [c1, c2]] -> [a1, b1, c1, a2, c2, a3]: every prefix is balanced
    over the groups that still have items."""
    out = []
    for i in range(max((len(g) for g in groups), default=0)):
        out += [g[i] for g in groups if i < len(g)]
    return out


def split_items(items: Sequence[dict], heldout: Sequence[dict] | None = None) -> dict[str, list[dict]]:
    """Train/held-out manifests: the given held-out list (a source test split) or the
    hash rule; train never contains a held-out key. Duplicate keys are kept once."""
    seen: set[str] = set()
    out: dict[str, list[dict]] = {"train": [], "heldout": []}
    if heldout is not None:
        # Held-out first: a key present in both source splits stays held-out.
        for it in heldout:
            if it["key"] not in seen:
                seen.add(it["key"])
                out["heldout"].append(it)
        for it in items:
            if it["key"] not in seen:
                seen.add(it["key"])
                out["train"].append(it)
        return out
    for it in items:
        if it["key"] in seen:
            continue
        seen.add(it["key"])
        # `split_key` groups related items (windows of one gene) on one side of the split.
        out["heldout" if is_heldout(it.get("split_key", it["key"])) else "train"].append(it)
    return out


class ProceduralEnv(Env):
    """An environment that generates cases. Subclasses implement
    `_generate(rng, difficulty) -> (key, prompt, reference, meta)` (with `answer_classes`:
    `_generate(rng, difficulty, target)`, a case whose answer is `target`); the split is
    decided by the key's hash, so train and held-out never share a key. Held-out case i
    is the i-th distinct key drawn: no item is counted twice."""

    size = {"train": 1_000_000, "heldout": 10_000}
    # consecutive repeated keys after which a held-out split counts as exhausted
    max_repeats = 200
    _heldout: dict = {}  # (env name, difficulty) -> the distinct held-out cases drawn so far

    def num_cases(self, split: str = "train", difficulty: str | None = None) -> int:
        check_split(split)
        state = ProceduralEnv._heldout.get((self.name, difficulty))
        if split == "heldout" and state is not None and state["exhausted"]:
            return len(state["cases"])
        return self.size[split]

    def _generate(self, rng: random.Random, difficulty: str, target=None):
        raise NotImplementedError

    def _target(self, index: int):
        return self.answer_classes[index % len(self.answer_classes)] if self.answer_classes else None

    def _draw(self, split: str, index: int, difficulty: str | None, target) -> tuple:
        # Rejection sampling on the key's hash: ~1.1 draws for train, ~10 for held-out.
        for attempt in range(1000):
            rng = random.Random(f"{self.name}|{split}|{index}|{difficulty}|{attempt}")
            diff = difficulty or DIFFICULTIES[rng.randrange(3)]
            args = (rng, diff) if target is None else (rng, diff, target)
            key, prompt, reference, meta = self._generate(*args)
            # The env name is part of the key so that two puzzle families with the
            # same parameters do not share one split decision.
            if is_heldout(f"{self.name}|{key}") == (split == "heldout"):
                return f"{self.name}|{key}", prompt, reference, diff, meta
        raise RuntimeError(f"{self.name}: could not draw a {split} case")  # ~impossible

    def case(self, index: int, split: str = "train", difficulty: str | None = None) -> Case:
        check_split(split)
        check_difficulty(difficulty)
        if not 0 <= index < self.num_cases(split, difficulty):
            raise IndexError(f"{self.name}: index {index} out of range")
        if split == "heldout":
            return self._heldout_case(index, difficulty)
        key, prompt, reference, diff, meta = self._draw(split, index, difficulty, self._target(index))
        return self._make_case(split, index, key, prompt, reference, diff, source="generated", **meta)

    def _heldout_case(self, index: int, difficulty: str | None) -> Case:
        state = ProceduralEnv._heldout.setdefault(
            (self.name, difficulty), {"cases": [], "keys": set(), "draws": 0, "exhausted": False})
        cases = state["cases"]
        while len(cases) <= index and not state["exhausted"]:
            slot = len(cases)
            for _ in range(self.max_repeats):
                key, prompt, reference, diff, meta = self._draw("heldout", state["draws"], difficulty,
                                                                self._target(slot))
                state["draws"] += 1
                if key not in state["keys"]:
                    state["keys"].add(key)
                    cases.append(self._make_case("heldout", slot, key, prompt, reference, diff,
                                                 source="generated", **meta))
                    break
            else:
                state["exhausted"] = True
        if index >= len(cases):
            raise IndexError(f"{self.name}: only {len(cases)} distinct held-out cases"
                             + (f" at difficulty {difficulty}" if difficulty else ""))
        return cases[index]

"""Your own data: JSONL or Parquet files for training, RL and evaluation (docs/your-data.md).

Three row shapes, one per line of JSONL (`.jsonl`, `.jsonl.gz`) or one per row of Parquet:

    text         {"text": "..."}                      pretraining text (what `opens1 data build`
                                                      writes: its shards' other columns are ignored)
    chat         {"messages": [...], "tools": [...]}  SFT, OpenAI chat format: string or list content
                                                      (text, image_url with a data: URL or a local
                                                      path, image), assistant tool_calls, tool turns
    verifiable   {"prompt": ..., "answer": ...,       RL and evaluation, scored by
                  "verifier": KIND, "options": {...}}  opens1.rewards.verify(KIND, response, answer, **options)

    read_samples(paths)        -> [data.sources.Sample]   text and chat rows, for `opens1 train --data`
    register_items(path, ...)  -> environment name        verifiable rows as an Environment
                                                          (`opens1 rl --data`, `opens1 eval --data`)

A bad row raises DataError naming `file:line` (1-based; Parquet: `file:row N`), so a run stops
before it starts, not halfway. Relative image paths are read relative to the file's folder;
remote URLs are refused (nothing is downloaded).
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
from pathlib import Path
from typing import Any, Iterator

from opens1.common.errors import UserError, did_you_mean
from opens1.data.sources import Sample
from opens1.envs.base import DIFFICULTIES, Case, ItemEnv, split_items
from opens1.envs.registry import register
from opens1.rewards import KINDS, verify

ROLES = ("system", "user", "assistant", "tool")
SPLITS = ("train", "heldout")
_CLASS_IDS = itertools.count()  # ItemEnv caches loaded items per class name: every registration is new


class DataError(UserError):
    """A row of a user data file that cannot be used; the message starts with file:line."""


class MissingDataFile(DataError, FileNotFoundError):
    """A data file that is not there."""


def is_data_file(path: str | Path) -> bool:
    """Whether `path` names a JSONL or Parquet file (vs. a data root directory)."""
    return str(path).lower().endswith((".jsonl", ".jsonl.gz", ".parquet"))


def split_data_paths(paths: list[str]) -> tuple[str | None, list[str]]:
    """`--data PATH...` -> (data root folder or None, your data files): a folder is a data root
    in the ../shared/data layout (at most one), a .jsonl/.jsonl.gz/.parquet file is your data."""
    roots = [p for p in paths if os.path.isdir(p)]
    files = [p for p in paths if p not in roots]
    if len(roots) > 1:
        raise UserError(f"--data takes at most one data root folder, got {', '.join(roots)}")
    for f in files:
        if not os.path.exists(f):
            raise UserError(f"--data {f!r}: no such file or folder")
        if not is_data_file(f):
            raise UserError(f"--data {f!r}: expected a .jsonl, .jsonl.gz or .parquet file, or a data root folder")
    return (roots[0] if roots else None), files


# ---------------------------------------------------------------- rows with their positions


def iter_rows(path: str | Path) -> Iterator[tuple[str, dict]]:
    """(where, row) for every row: where is `file:line` (JSONL) or `file:row N` (Parquet)."""
    p = Path(path)
    if not p.is_file():
        raise MissingDataFile(f"{path}: no such file" if not p.exists() else f"{path}: not a file")
    if p.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(p).to_pylist()
        except Exception as e:  # pyarrow's errors for a corrupt file are many types
            raise DataError(f"{path}: not a readable Parquet file ({e})") from e
        for i, row in enumerate(rows, 1):
            yield f"{path}:row {i}", row
        return
    opener = gzip.open if p.suffix.lower() == ".gz" else open
    with opener(p, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise DataError(f"{where}: not UTF-8") from None
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
            yield where, row


# ---------------------------------------------------------------- training rows: text and chat


def _image_source(src: Any, where: str, base: Path) -> Any:
    if not isinstance(src, str):
        raise DataError(f"{where}: an image must be a data: URL or a file path, got {type(src).__name__}")
    if src.startswith("data:"):
        return src
    if "://" in src:
        raise DataError(f"{where}: remote image URL {src[:80]!r}: use a data: URL or a local path (nothing is downloaded)")
    path = Path(src.removeprefix("file://")).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise DataError(f"{where}: image file {str(path)!r} not found")
    return str(path)


def _content(content: Any, where: str, base: Path) -> Any:
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise DataError(f"{where}: message content must be a string or a list of parts")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise DataError(f"{where}: a text part needs a string 'text'")
            parts.append(part)
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            parts.append({"type": "image", "image": _image_source(url, where, base)})
        elif kind == "image":
            parts.append({"type": "image", "image": _image_source(part.get("image"), where, base)})
        elif kind == "time_series":
            parts.append(part)
        else:
            raise DataError(f"{where}: unknown content part type {kind!r}; expected text, image_url, image or time_series")
    return parts


def _messages(msgs: Any, where: str, base: Path) -> list[dict]:
    if not isinstance(msgs, list) or not msgs:
        raise DataError(f"{where}: 'messages' must be a non-empty list")
    out = []
    for k, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            role = m.get("role") if isinstance(m, dict) else None
            raise DataError(f"{where}: message {k} has role {role!r}; expected one of {', '.join(ROLES)}")
        m = {**m, "content": _content(m.get("content"), where, base)}
        for call in m.get("tool_calls") or []:
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or "arguments" not in fn:
                raise DataError(f"{where}: message {k}: a tool call needs {{'function': {{'name', 'arguments'}}}}")
        if m["content"] is None and not m.get("tool_calls"):
            raise DataError(f"{where}: message {k} has no content")
        out.append(m)
    return out


def read_samples(paths: list[str | Path]) -> list:
    """Text and chat rows of the files as data.sources.Sample (source = the file's name)."""
    samples = []
    for path in paths:
        base = Path(path).parent
        for where, row in iter_rows(path):
            if isinstance(row.get("text"), str):
                samples.append(Sample(f"file:{Path(path).name}", text=row["text"], meta={"where": where}))
            elif row.get("messages") is not None:
                meta = {"where": where}
                if row.get("tools"):
                    if not isinstance(row["tools"], list):
                        raise DataError(f"{where}: 'tools' must be a list of function specs")
                    meta["tools"] = row["tools"]
                samples.append(Sample(f"file:{Path(path).name}", messages=_messages(row["messages"], where, base),
                                      meta=meta))
            elif "prompt" in row and "answer" in row:
                raise DataError(f"{where}: a verifiable item (prompt/answer) is RL or eval data: "
                                "use `opens1 rl --data` or `opens1 eval --data`")
            else:
                raise DataError(f"{where}: expected a string 'text' or a 'messages' list; got keys {sorted(row)}")
    if not samples:
        raise DataError(f"{', '.join(map(str, paths))}: no rows")
    return samples


# ---------------------------------------------------------------- verifiable items: an environment


def read_items(path: str | Path) -> list[dict]:
    """The verifiable rows of a file, checked: prompt, answer, verifier kind, options."""
    base = Path(path).parent
    items = []
    for where, row in iter_rows(path):
        missing = [k for k in ("prompt", "answer") if k not in row]
        if missing:
            raise DataError(f"{where}: a verifiable item needs 'prompt' and 'answer' (missing {', '.join(missing)})")
        prompt = row["prompt"]
        if isinstance(prompt, list):
            prompt = _messages(prompt, where, base)
        elif not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{where}: 'prompt' must be a non-empty string or a messages list")
        kind = row.get("verifier", "exact")
        if kind not in KINDS:
            raise DataError(f"{where}: unknown verifier {kind!r}{did_you_mean(str(kind), KINDS)}; known: {', '.join(sorted(KINDS))}")
        options = row.get("options") or {}
        if not isinstance(options, dict):
            raise DataError(f"{where}: 'options' must be an object")
        split = row.get("split")
        if split is not None and split not in SPLITS:
            raise DataError(f"{where}: 'split' must be train or heldout, got {split!r}")
        difficulty = row.get("difficulty", "medium")
        if difficulty not in DIFFICULTIES:
            raise DataError(f"{where}: 'difficulty' must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")
        key = row.get("id") or json.dumps(prompt, sort_keys=True, ensure_ascii=False)
        items.append({"key": str(key), "prompt": prompt, "answer": row["answer"], "kind": kind, "options": options,
                      "split": split, "difficulty": difficulty, "where": where})
    if not items:
        raise DataError(f"{path}: no rows")
    return items


class ItemsEnv(ItemEnv):
    """Verifiable items from a file. Held-out: the rows marked `"split": "heldout"` if any row
    has a split, else the environments' hash rule on the item key (1 in 10). With
    `all_rows`, both splits are the whole file (a file given to `opens1 eval` is the test set)."""

    path: str = ""
    all_rows: bool = False
    domain = "data"

    def _load(self) -> dict[str, list[dict]]:
        items = read_items(self.path)
        if self.all_rows:
            return {"train": items, "heldout": items}
        if any(it["split"] for it in items):
            return {s: [it for it in items if (it["split"] or "train") == s] for s in SPLITS}
        return split_items(items)

    def _build(self, item: dict, split: str, index: int) -> Case:
        return self._make_case(split, index, item["key"], item["prompt"], item["answer"], item["difficulty"],
                               source=item["where"], kind=item["kind"], verify_options=item["options"])

    def verify(self, prediction, case: Case):
        # The verifier is per row, stored in the case: re-scoring needs no file.
        return verify(case.meta.get("kind", self.kind), prediction, case.reference,
                      **case.meta.get("verify_options", {}))

    def sft_response(self, case: Case) -> str | None:
        return None  # an answer alone is no worked response; SFT data is chat rows


def env_name(path: str | Path) -> str:
    """'data/<file stem>': the name a file's items are registered, evaluated and logged under."""
    name = Path(path).name
    for ext in (".gz", ".jsonl", ".parquet"):
        name = name.removesuffix(ext)
    return f"data/{name}"


def register_items(path: str | Path | None, *, name: str | None = None, all_rows: bool = False) -> str:
    """Register a file's verifiable items as an environment; returns its name. The rows are
    read and checked now, so a bad row stops the command before any work. `path=None`
    registers a verifier-only environment (re-scoring saved generations needs no file)."""
    name = name or env_name(path)
    cls = type(f"ItemsEnv_{next(_CLASS_IDS)}", (ItemsEnv,),
               {"name": name, "path": str(path or ""), "all_rows": all_rows, "description": f"items of {path}"})
    register(cls, replace=True)  # the same name again (tests, a second --data) replaces it
    if path is not None:
        cls(None).num_cases("train")
    return name

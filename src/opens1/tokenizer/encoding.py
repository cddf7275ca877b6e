"""Encoding for DynamicTokenizer (dynamic.py): text -> items -> jobs -> ids, a whole batch at once.

`_items` splits each text into plain text and added tokens, `_plan` turns the items into jobs
(BPE text, domain text, ids), then `_execute` runs all jobs with one batched call per
vocabulary. OpenS1's plan (`detect.segment` decides the spans):
* prose spans -> base BPE, all prose of a batch in one Rust `encode_batch` call;
* domain spans -> that domain's SentencePiece model (one batched call per domain);
  characters the model cannot round-trip (a literal U+2581, SentencePiece's space
  symbol; any unseen character for a model without byte fallback) go to the base BPE;
* explicit tags -> their ids; auto-detected spans get no tag ids.
InternS1Tokenizer (interns1.py) overrides `_items`, `_plan`, `_run_sp`, `_convert` and
`normalize` with Intern-S1's rules.

Only relative imports: hf.py copies this module into exported tokenizer directories.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import NamedTuple

import regex

from .detect import Span, segment
from .vocab import DOMAIN_TAGS


class Item(NamedTuple):
    """A stretch of the text being encoded: plain text, an added token (it has an id) or a
    logical mark without an id (Intern-S1's auto-detect wrappers and protect tags)."""

    kind: str  # "text" | "added" | "mark"
    start: int
    end: int
    value: str | None  # the token's string for "added" / "mark"


class Job(NamedTuple):
    """One unit of encoding work: text for the base BPE, text for a domain model, or an id."""

    kind: str  # "bpe" | "sp" | "id"
    value: object  # the text, or the id
    pos: int  # where it starts in the text (positions map tokens back to chat pieces)
    domain: str | None  # "sp": its model; "bpe": Intern-S1 looks its tokens up in this model


def _not_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _merge_text(items: list[Item]) -> list[Item]:
    """Adjacent text items as one, so text is BPE-encoded across piece boundaries."""
    merged: list[Item] = []
    for it in items:
        if it.kind == "text" and merged and merged[-1].kind == "text" and merged[-1].end == it.start:
            merged[-1] = Item("text", merged[-1].start, it.end, None)
        else:
            merged.append(it)
    return merged


def _batches(plans: list[list[Job]], domains) -> tuple[list[str], dict[str, list[str]], list[list[int | None]]]:
    """The BPE texts and per-domain texts of every plan, and each job's index in its batch."""
    bpe_texts: list[str] = []
    sp_texts: dict[str, list[str]] = {d: [] for d in domains}
    slots = []
    for plan in plans:
        row = []
        for job in plan:
            if job.kind == "bpe":
                row.append(len(bpe_texts))
                bpe_texts.append(job.value)
            elif job.kind == "sp":
                row.append(len(sp_texts[job.domain]))
                sp_texts[job.domain].append(job.value)
            else:
                row.append(None)
        slots.append(row)
    return bpe_texts, sp_texts, slots


class Encoding:
    """The encoding methods of DynamicTokenizer, which provides `base`, `sp`, `offsets`,
    `special_tokens`, `auto_detect`, `pad_token_id`, `_tag_names` and `_foreign`."""

    def segments(self, text: str) -> list[Span]:
        """How `text` splits into prose, domain spans and tags (for inspection and tests)."""
        return segment(text, self._tag_names, self.auto_detect)

    def default_mode(self) -> str:
        """How added-token strings in text are read by default: OpenS1's design keeps control
        tokens as text ("content"); domain tags are content markup and always honoured."""
        return "content"

    def _mode(self, split_special_tokens: bool | None) -> str:
        if split_special_tokens is None:
            return self.default_mode()
        return "none" if split_special_tokens else "all"

    def encode(self, text: str, *, add_special_tokens: bool = True, split_special_tokens: bool | None = None) -> list[int]:
        """Token ids of `text`. No BOS/EOS is ever added (Qwen-style), whatever
        `add_special_tokens` says. `split_special_tokens` (transformers' meaning): False parses
        added-token strings such as "<|im_end|>" as their tokens, True keeps every string as
        text; the default is the tokenizer's own (text for OpenS1's, tokens for Intern-S1's)."""
        return self.encode_batch([text], split_special_tokens=split_special_tokens)[0]

    def encode_batch(self, texts: Sequence[str], *, split_special_tokens: bool | None = None) -> list[list[int]]:
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a list of strings; use encode() for one string")
        mode = self._mode(split_special_tokens)
        plans = []
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"encode expects str, got {type(text).__name__}")
            stream = self.normalize(text)
            plans.append(self._plan(stream, self._items(stream, mode, 0)))
        return [ids for ids, _ in self._execute(plans, texts)]

    def __call__(self, text, *, add_special_tokens: bool = True, split_special_tokens: bool | None = None,
                 return_tensors: str | None = None) -> dict:
        """transformers' call shape: {"input_ids", "attention_mask"} for a string or a list
        of strings (lists are not padded unless return_tensors="pt", which right-pads)."""
        single = isinstance(text, str)
        batch = self.encode_batch([text] if single else list(text), split_special_tokens=split_special_tokens)
        if return_tensors is None:
            out = {"input_ids": batch, "attention_mask": [[1] * len(ids) for ids in batch]}
            return {k: v[0] for k, v in out.items()} if single else out
        if return_tensors != "pt":
            raise ValueError(f"return_tensors={return_tensors!r}: only None and 'pt' are supported")
        return self._padded(batch)

    def _padded(self, batch: list[list[int]]) -> dict:
        try:  # the exported tokenizer module needs only regex, sentencepiece, tokenizers
            import torch  # optional: torch
        except ImportError as e:
            raise ValueError("return_tensors='pt' needs torch") from e

        width = max((len(ids) for ids in batch), default=0)
        input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)  # [B, T]
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, ids in enumerate(batch):
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[i, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def encode_pieces(self, pieces: Sequence[tuple[str, str]]) -> tuple[list[int], list[int]]:
        """Ids of the concatenation of `pieces`, each (text, mode): mode "all" parses every
        added token in its text (template-owned text), "content" keeps control tokens as text,
        "none" splits nothing. Returns (ids, piece index of each token's first character),
        which the chat renderer turns into a training mask. The text is encoded as one
        stream: pieces only decide how added-token strings are read."""
        stream_parts, items = [], []
        pos = 0
        starts = []
        for text, mode in pieces:
            text = self.normalize(text)
            starts.append(pos)
            items.extend(self._items(text, mode, pos))
            stream_parts.append(text)
            pos += len(text)
        stream = "".join(stream_parts)
        ((ids, where),) = self._execute([self._plan(stream, _merge_text(items))], [stream], positions=True)
        return ids, [bisect.bisect_right(starts, p) - 1 for p in where]

    # ------------------------------------------------------------ the two stages of encoding

    def normalize(self, text: str) -> str:
        return text  # lossless: no Unicode normalisation

    def _control_pattern(self):
        if not hasattr(self, "_controls_re"):
            tags = {t for ts in DOMAIN_TAGS.values() for t in ts}
            names = sorted((t for t in self.special_tokens if t not in tags), key=lambda t: (-len(t), t))
            self._controls_re = regex.compile("|".join(regex.escape(t) for t in names)) if names else None
        return self._controls_re

    def _items(self, text: str, mode: str, base: int) -> list[Item]:
        """Split one piece into text and added-token items (positions offset by `base`)."""
        pattern = self._control_pattern() if mode == "all" else None
        out, pos = [], 0
        if pattern is not None:
            for m in pattern.finditer(text):
                if m.start() > pos:
                    out.append(Item("text", base + pos, base + m.start(), None))
                out.append(Item("added", base + m.start(), base + m.end(), m.group()))
                pos = m.end()
        if pos < len(text):
            out.append(Item("text", base + pos, base + len(text), None))
        return out

    def _plan(self, stream: str, items: list[Item]) -> list[Job]:
        """Items -> jobs: prose for the base BPE, domain spans for their SentencePiece, ids."""
        jobs: list[Job] = []
        for it in items:
            if it.kind == "added":
                jobs.append(Job("id", self.special_tokens[it.value], it.start, None))
                continue
            text = stream[it.start : it.end]
            for s in segment(text, self._tag_names, self.auto_detect):
                piece, at = text[s.start : s.end], it.start + s.start
                if s.tag:
                    jobs.append(Job("id", self.special_tokens[piece], at, None))
                elif s.domain is None:
                    jobs.append(Job("bpe", piece, at, None))
                else:
                    self._plan_domain(s.domain, piece, at, jobs)
        return jobs

    def _plan_domain(self, domain: str, piece: str, at: int, jobs: list) -> None:
        pos = 0
        for m in self._foreign[domain].finditer(piece):
            if m.start() > pos:
                jobs.append(Job("sp", piece[pos : m.start()], at + pos, domain))
            jobs.append(Job("bpe", m.group(), at + m.start(), None))
            pos = m.end()
        if pos < len(piece):
            jobs.append(Job("sp", piece[pos:] if pos else piece, at + pos, domain))

    def _run_sp(self, domain: str, texts: Sequence[str]) -> list[list[int]]:
        off = self.offsets[domain]
        return [[off + j for j in ids] for ids in self.sp[domain].encode(list(texts))]

    def _convert(self, ids: list[int], domain: str) -> list[int]:
        return ids  # only Intern-S1's rules re-read BPE tokens under a domain model

    def _bpe(self, texts: Sequence[str]):
        return self.base.encode_batch(list(texts), add_special_tokens=False) if texts else []

    def _bpe_ids(self, texts: Sequence[str], domain: str | None = None) -> list[list[int]]:
        rows = [e.ids for e in self._bpe(texts)]
        return [self._convert(r, domain) for r in rows] if domain else rows

    def _execute(self, plans: list[list[Job]], texts, *, positions: bool = False):
        """Run the jobs of every plan with one batched call per vocabulary. Returns, per plan,
        (ids, stream position of each token or None)."""
        bpe_texts, sp_texts, slots = _batches(plans, self.sp)
        try:
            bpe = self._bpe(bpe_texts)
            sp_ids = {d: self._run_sp(d, xs) for d, xs in sp_texts.items() if xs}
        except (TypeError, ValueError):  # the libraries reject what is not valid Unicode
            bad = next((t for t in texts if _not_utf8(t)), None)
            if bad is not None:
                raise ValueError(f"text is not valid Unicode (lone surrogate?): {bad[:40]!r}") from None
            raise
        return [self._assemble(plan, row, bpe, sp_ids, positions=positions) for plan, row in zip(plans, slots)]

    def _assemble(self, plan: list[Job], row: list, bpe, sp_ids: dict, *, positions: bool):
        """One plan's ids from the batched results (and, with `positions`, where each starts)."""
        ids: list[int] = []
        where: list[int] | None = [] if positions else None
        for job, k in zip(plan, row):
            if job.kind == "id":
                piece = [job.value]
            elif job.kind == "sp":
                piece = sp_ids[job.domain][k]
            else:
                enc = bpe[k]
                piece = self._convert(enc.ids, job.domain) if job.domain else enc.ids
                if positions:
                    where.extend(job.pos + o[0] for o in enc.offsets)
            ids.extend(piece)
            if positions and job.kind != "bpe":
                where.extend([job.pos] * len(piece))
        return ids, where

"""Intern-S1's own tokenizer behaviour, for the tokenizer directories of the real checkpoints.

`load_tokenizer(dir)` on an Intern-S1 HF directory (vocab.json, merges.txt,
tokenizer_{SMILES,IUPAC,FASTA}.model, tokenizer_config.json) returns an `InternS1Tokenizer`,
which gives the ids of transformers' `InternS1Tokenizer` (the hub's remote code for
Intern-S1) for every text; tests/tokenizer/interns1_reference.py re-states that class
independently and docs/tokenizer.md ("Intern-S1 directories") sums it up. Its behaviour,
step by step:

1. NFC normalisation (its Qwen2 base normalises before anything else).
2. Added tokens split the text: the 48 real ones (`<|im_end|>`, `<think>`, `<SMILES>`, ...,
   with their AddedToken lstrip/rstrip/single_word flags), plus logical marks without ids:
   the auto-detect wrappers `<SMILES_AUTO_DETECT>`/`<FASTA_AUTO_DETECT>` (and closings) and
   the protect tags `<MOLFORMULA>`/`</MOLFORMULA>`. `split_special_tokens=True` splits nothing.
3. Auto-detection (interns1_detect.py) on every text segment outside an explicit domain tag
   or protect region (a depth counter, never negative): first SMILES, then FASTA over the
   SMILES pass's output, wrappers and candidates included.
   - SMILES: the first group of `(?![:.=])(?>unit){10,}(?<![:.=])`, unit = bracket atom,
     element symbol (two-letter ones first), aromatic b c n o p s, or one of ( ) . = - # @
     digit $ % * : + / \\ ; at least 5 ASCII letters; RDKit parses it; no ASCII letter
     right before or after it.
   - FASTA: any run of 27+ ASCII capitals, no other check.
4. Encoding with a stack of active domain models: explicit tags (`<SMILES>`, `<SELFIES>`
   -> SMILES model, `<IUPAC>`, `<FASTA>`) have ids and push/pop; wrappers push/pop without
   ids; protect tags are encoded as byte-level BPE text; other segments go to the top
   model's SentencePiece, or the BPE when the stack is empty. A piece SentencePiece cannot
   encode (its id 0) is BPE-encoded instead. Token strings are then turned into ids again
   under the same stack: a BPE token that is also a piece of the active model takes the
   piece's id (+ the model's offset), as in transformers' `convert_tokens_to_ids`.
   Before the byte-level BPE, SentencePiece's space symbol U+2581 becomes a space.

Ids: Qwen3's BPE, its 26 added tokens, SMILES pieces, SMILES/SELFIES tags, IUPAC pieces and
tags, FASTA pieces and tags, then the other added tokens: the domain tags'
ids are computed from the model sizes exactly as transformers does, whether or not
tokenizer_config.json lists them; the other added tokens come from tokenizer_config.json
(or, without one, Intern-S1's own table).

Two deliberate bounds keep tokenization linear in the input length (transformers' class
is super-linear there): a SMILES candidate longer than `detect.MAX_SMILES_CHECK`
characters is not handed to RDKit and is treated as not a molecule, and a bracket atom
spans at most `interns1_detect.MAX_BRACKET` characters (in transformers' class, text with
many `[` and no `]` is quadratic). Both only matter for runs far longer than any molecule
written in text. Without RDKit, the rule-based check transformers falls back to is used
(`interns1_detect.rules_ok`).
"""

from __future__ import annotations

import unicodedata
import json
from collections.abc import Sequence
from pathlib import Path

import regex
import sentencepiece as spm

from .base import base_from_vocab_merges, token_bytes, unicode_to_byte
from .detect import Span
from .dynamic import DynamicTokenizer
from .encoding import Item, Job
from .interns1_detect import auto_split
from .vocab import QWEN3_ADDED

# domain model of each explicit begin/end tag
TAG_MODEL = {"<SMILES>": "smiles", "<SELFIES>": "smiles", "<IUPAC>": "iupac", "<FASTA>": "protein"}
END_TAG_MODEL = {f"</{t[1:]}": m for t, m in TAG_MODEL.items()}
AUTO_BEGIN = {"<SMILES_AUTO_DETECT>": "smiles", "<FASTA_AUTO_DETECT>": "protein"}
AUTO_END = {"</SMILES_AUTO_DETECT>": "smiles", "</FASTA_AUTO_DETECT>": "protein"}
PROTECT_BEGIN, PROTECT_END = "<MOLFORMULA>", "</MOLFORMULA>"
MARKS = frozenset(AUTO_BEGIN) | frozenset(AUTO_END) | {PROTECT_BEGIN, PROTECT_END}
# (file, domain, explicit tags in id order) in transformers' order; SELFIES shares the SMILES model
SUBMODELS = (
    ("tokenizer_SMILES.model", "smiles", ("<SMILES>", "</SMILES>", "<SELFIES>", "</SELFIES>")),
    ("tokenizer_IUPAC.model", "iupac", ("<IUPAC>", "</IUPAC>")),
    ("tokenizer_FASTA.model", "protein", ("<FASTA>", "</FASTA>")),
)
# Intern-S1's added tokens after the FASTA tags, in id order (real_added_vocab: 152957..152970)
INTERNS1_TAIL = (
    "<IMG_CONTEXT>", "<img>", "</img>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>",
    "<|action_start|>", "<|action_end|>", "<|interpreter|>", "<|plugin|>", "<video>",
)  # fmt: skip

# ---------------------------------------------------------------- the tokenizer


class InternS1Tokenizer(DynamicTokenizer):
    """A DynamicTokenizer with Intern-S1's segmentation, added-token parsing and id rules.

    added_flags: token -> (lstrip, rstrip, single_word), as in tokenizer_config.json."""

    scheme = "interns1"

    def __init__(self, *args, added_flags: dict[str, tuple[bool, bool, bool]] | None = None, **kwargs):
        kwargs.setdefault("auto_detect", ("smiles", "protein"))
        super().__init__(*args, **kwargs)
        self.added_flags = dict(added_flags or {})
        tags = {t for t in self.special_tokens if t in TAG_MODEL or t in END_TAG_MODEL}
        # "all": every added token and mark; "content": domain tags and marks only (control
        # tokens stay text, OpenS1's chat default); marks always split unless nothing does
        self._split_all = _alternation(list(self.special_tokens) + list(MARKS))
        self._split_content = _alternation(list(tags) + list(MARKS))
        self._tag_ids = {t: self.special_tokens[t] for t in tags}
        self._vocab = self.base.get_vocab(with_added_tokens=False)
        self._unk = {d: sp.unk_id() for d, sp in self.sp.items()}
        self._rebuild_domain_bytes()

    # byte-level decoding of domain pieces, as transformers' convert_tokens_to_string does
    def _rebuild_domain_bytes(self) -> None:
        table = unicode_to_byte()
        for d, sp in self.sp.items():
            off = self.offsets[d]
            for j in range(sp.get_piece_size()):
                if sp.is_byte(j):
                    continue  # byte pieces keep their byte (Intern-S1's models have none)
                s = sp.id_to_piece(j).replace("\u2581", "\u0120").replace("\n", "\u010a")
                if all(c in table for c in s):
                    self._bytes[off + j] = token_bytes(s)

    def default_mode(self) -> str:
        return "all"  # transformers parses added tokens in text

    def segments(self, text: str) -> list[Span]:
        """How the NFC form of `text` is encoded: prose (domain None), domain spans, added
        tokens (tag=True; domain set for domain tags). Positions are in the NFC text."""
        stream = self.normalize(text)
        out = []
        for j in self._plan(stream, self._items(stream, self.default_mode(), 0)):
            if j.kind == "id":
                s = self._id_to_special[j.value]
                out.append(Span(j.pos, j.pos + len(s), TAG_MODEL.get(s, END_TAG_MODEL.get(s)), tag=True))
            else:
                out.append(Span(j.pos, j.pos + len(j.value), j.domain if j.kind == "sp" else None))
        return out

    # ------------------------------------------------------------ steps 1-2

    def _items(self, text: str, mode: str, base: int) -> list[Item]:
        """One piece of text -> items (positions offset by `base` in the stream)."""
        if mode == "none":
            kind = "mark" if text in MARKS else "text"
            return [Item(kind, base, base + len(text), text)] if text else []
        pattern = self._split_all if mode == "all" else self._split_content
        out, pos = [], 0
        for m in pattern.finditer(text):
            a, b = m.span()
            if a > pos:
                out.append(Item("text", base + pos, base + a, None))
            s = m.group()
            out.append(Item("mark" if s in MARKS else "added", base + a, base + b, s))
            pos = b
        if pos < len(text):
            out.append(Item("text", base + pos, base + len(text), None))
        return out

    def normalize(self, text: str) -> str:
        return unicodedata.normalize("NFC", text)

    def _strip_around_added(self, stream: str, items: list[Item]) -> list[Item]:
        """AddedToken lstrip / rstrip / single_word, as transformers' tokenize applies them."""
        if not any(any(f) for f in self.added_flags.values()):
            return items
        items = list(items)
        for i, it in enumerate(items):
            if it.kind != "added" or it.value not in self.added_flags:
                continue
            lstrip, rstrip, single = self.added_flags[it.value]
            left = items[i - 1] if i > 0 and items[i - 1].kind == "text" else None
            right = items[i + 1] if i + 1 < len(items) and items[i + 1].kind == "text" else None
            if rstrip and right and right.end > right.start:
                s = stream[right.start : right.end]
                items[i + 1] = right = Item("text", right.end - len(s.lstrip()), right.end, None)
            if lstrip and left and left.end > left.start:
                s = stream[left.start : left.end]
                items[i - 1] = left = Item("text", left.start, left.start + len(s.rstrip()), None)
            if single and left and left.end > left.start and stream[left.end - 1] != " ":
                items[i - 1], items[i] = Item("text", left.start, it.end, None), Item("text", it.end, it.end, None)
            elif single and right and right.end > right.start and stream[right.start] != " ":
                items[i + 1], items[i] = Item("text", it.start, right.end, None), Item("text", it.start, it.start, None)
        return [it for it in items if it.kind != "text" or it.end > it.start]

    # ------------------------------------------------------------ steps 3-4

    def _plan(self, stream: str, items: list[Item]) -> list[Job]:
        items = self._strip_around_added(stream, items)
        # step 3: auto-detection outside explicit tags and protect regions
        flat: list[tuple] = []  # ("text", a, b) | ("mark", string, pos) | ("added", string, pos)
        depth = 0
        for it in items:
            if it.kind == "text":
                if depth:
                    flat.append(("text", it.start, it.end))
                else:
                    flat.extend(auto_split(stream, it.start, it.end))
                continue
            flat.append((it.kind, it.value, it.start))
            if it.value == PROTECT_BEGIN or (it.kind == "added" and it.value in TAG_MODEL):
                depth += 1
            elif it.value == PROTECT_END or (it.kind == "added" and it.value in END_TAG_MODEL):
                depth = max(0, depth - 1)
        # step 4: encoding with a stack of active models
        jobs: list[Job] = []
        stack: list[str] = []
        for kind, x, y in flat:
            top = stack[-1] if stack else None
            if kind == "text":
                text = stream[x:y]
                if top is None:
                    jobs.append(Job("bpe", text.replace("\u2581", " "), x, None))
                else:
                    jobs.append(Job("sp", text, x, top))
            elif kind == "mark":
                if x in (PROTECT_BEGIN, PROTECT_END):
                    jobs.append(Job("bpe", x, y, top))  # no id: the tag is BPE text
                else:
                    self._switch(stack, x)
            else:  # an added token
                jobs.append(Job("id", self.special_tokens[x], y, None))
                if x in TAG_MODEL:
                    stack.append(TAG_MODEL[x])
                elif x in END_TAG_MODEL and stack:
                    stack.pop()  # transformers pops whatever is on top (it only warns on a mismatch)
        return jobs

    @staticmethod
    def _switch(stack: list[str], wrapper: str) -> None:
        if wrapper in AUTO_BEGIN:
            stack.append(AUTO_BEGIN[wrapper])
        elif stack:
            stack.pop()

    def _run_sp(self, domain: str, texts: Sequence[str]) -> list[list[int]]:
        """SentencePiece of `domain`; pieces it cannot encode (id 0) go through the BPE and are
        then looked up as pieces of the same model, as transformers converts tokens to ids."""
        sp, off = self.sp[domain], self.offsets[domain]
        pieces = sp.encode(list(texts), out_type=str)
        ids = sp.encode(list(texts))
        fallback = [p.replace("\u2581", " ") for ps, js in zip(pieces, ids) for p, j in zip(ps, js) if j == 0]
        fb = iter(self._bpe_ids(fallback, domain)) if fallback else iter(())
        out = []
        for ps, js in zip(pieces, ids):
            row: list[int] = []
            for p, j in zip(ps, js):
                if j == 0:
                    row.extend(next(fb))
                else:
                    row.append(j + off)
            out.append(row)
        return out

    def _convert(self, ids: list[int], domain: str) -> list[int]:
        """BPE ids -> ids under an active model: a token that is also a piece takes its id."""
        sp, off, unk = self.sp[domain], self.offsets[domain], self._unk[domain]
        out = []
        for i in ids:
            j = sp.piece_to_id(self.base.id_to_token(i))
            out.append(i if j == unk else j + off)
        return out

    # ------------------------------------------------------------ save

    def layout(self) -> dict:
        d = super().layout()
        d["added_flags"] = {t: list(f) for t, f in self.added_flags.items() if any(f)}
        return d

    @staticmethod
    def layout_kwargs(meta: dict) -> dict:
        return {"added_flags": {t: tuple(f) for t, f in meta.get("added_flags", {}).items()}}


def _alternation(tokens: list[str]) -> regex.Pattern:
    """Leftmost, then longest, match among `tokens` (transformers' trie split)."""
    alts = sorted(set(tokens), key=lambda t: (-len(t), t))
    return regex.compile("|".join(regex.escape(t) for t in alts)) if alts else regex.compile(r"(?!)")


# ---------------------------------------------------------------- loading a directory


def _configured_tokens(cfg_path: Path) -> tuple[dict[int, str], dict[str, tuple[bool, bool, bool]]]:
    """tokenizer_config.json's added tokens (id -> string, marks left out) and their
    AddedToken flags (lstrip, rstrip, single_word); none without the file."""
    cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    configured: dict[int, str] = {}
    flags: dict[str, tuple[bool, bool, bool]] = {}
    for k, v in (cfg.get("added_tokens_decoder") or {}).items():
        content = v["content"] if isinstance(v, dict) else str(v)
        if content in MARKS:
            continue  # logical tags never have ids
        configured[int(k)] = content
        if isinstance(v, dict):
            flags[content] = (bool(v.get("lstrip")), bool(v.get("rstrip")), bool(v.get("single_word")))
    return configured, flags


def from_interns1_dir(directory) -> InternS1Tokenizer:
    """An Intern-S1 HF tokenizer directory with its id layout (see the module docstring)."""
    d = Path(directory)
    for f in ("vocab.json", "merges.txt"):
        if not (d / f).is_file():
            raise FileNotFoundError(f"{str(d)!r} is not an HF BPE tokenizer directory: {f} is missing")
    base = base_from_vocab_merges(d / "vocab.json", d / "merges.txt")
    n = base.get_vocab_size(with_added_tokens=False)
    cfg_path = d / "tokenizer_config.json"
    configured, flags = _configured_tokens(cfg_path)
    specials = {t: i for i, t in configured.items()}
    if not configured:  # no config: Qwen3's 26 added tokens right after the BPE
        specials = {t: n + i for i, t in enumerate(QWEN3_ADDED)}
    # transformers' offsets: BPE + 26, then per model its pieces and its explicit tags
    nxt = n + len(QWEN3_ADDED)
    models, offsets = {}, {}
    for fname, name, tags in SUBMODELS:
        path = d / fname
        if not path.is_file():
            raise FileNotFoundError(f"Intern-S1 tokenizer directory {str(d)!r} lacks {fname}")
        models[name] = path.read_bytes()
        offsets[name] = nxt
        nxt += spm.SentencePieceProcessor(model_proto=models[name]).get_piece_size()
        for t in tags:  # computed, as transformers does, whatever the config says
            specials[t] = nxt
            flags.pop(t, None)
            nxt += 1
    if not configured:  # Intern-S1's other added tokens follow the FASTA tags
        for i, t in enumerate(INTERNS1_TAIL):
            specials[t] = nxt + i
    clash = sorted(i for i in specials.values() if i < n)
    if clash:
        raise ValueError(f"{cfg_path}: added tokens with ids inside the BPE vocabulary: {clash[:5]}")
    return InternS1Tokenizer(
        base, models, offsets, specials, added_flags=flags,
        provenance={"source": "interns1-hf", "path": str(d)},
    )  # fmt: skip

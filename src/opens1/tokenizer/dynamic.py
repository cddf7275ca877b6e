"""The dynamic scientific tokenizer: byte-level BPE for prose, SentencePiece per domain.

Id layout (one table, disjoint ranges, so decoding is context-free):

    [0, n_base)                  base byte-level BPE (HF `tokenizers`)
    special tokens               control tokens and domain tags (their own ids)
    [offset_d, offset_d + n_d)   domain d's SentencePiece pieces (piece id + offset)

The OpenS1 layout puts the specials right after the base, then SMILES, IUPAC,
protein and DNA pieces. An Intern-S1 HF directory keeps its own layout and rules
(interns1.py, a subclass that changes how text is split into jobs).

Encoding runs in two stages for a whole batch: `_items` + `_plan` turn each text into
jobs (BPE text, domain text, ids), then `_execute` runs all jobs with one batched call
per vocabulary. OpenS1's plan (`detect.segment` decides the spans):
* prose spans -> base BPE, all prose of a batch in one Rust `encode_batch` call;
* domain spans -> that domain's SentencePiece model (one batched call per domain);
  characters the model cannot round-trip (a literal U+2581, SentencePiece's space
  symbol; any unseen character for a model without byte fallback) go to the base BPE;
* explicit tags -> their ids; auto-detected spans get no tag ids.
Control-token strings in text (`<|im_end|>`, `<think>`, ...) are plain text by default
(the base BPE has no added tokens); `split_special_tokens=False` parses them, and the
chat renderer parses them in the template's own text only (`encode_pieces`). Domain
tags in text are honoured (they are content markup).

Decoding maps every id to its bytes through one precomputed table and decodes UTF-8
once (invalid sequences, e.g. a generation cut inside a character, become U+FFFD).
No Unicode normalisation anywhere: decode(encode(x)) == x for every valid string.

Only relative imports: hf.py copies this module into exported tokenizer directories.
"""

from __future__ import annotations

import json
import os
import tempfile
import bisect
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import regex

from .detect import Span, segment

ASSETS = Path(__file__).resolve().parent / "assets"
LAYOUT_FILE = "opens1_tokenizer.json"
FORMAT = "opens1-dynamic-tokenizer"

DOMAINS = ("smiles", "iupac", "protein", "dna")
DOMAIN_TAGS = {
    "smiles": ("<SMILES>", "</SMILES>", "<SELFIES>", "</SELFIES>"),
    "iupac": ("<IUPAC>", "</IUPAC>"),
    "protein": ("<FASTA>", "</FASTA>"),
    "dna": ("<DNA>", "</DNA>"),
}
CONTROL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>",
    "<img>", "</img>", "<IMG_CONTEXT>", "<TS>", "</TS>", "<TS_CONTEXT>",
    "<|action_start|>", "<|action_end|>", "<|plugin|>", "<|interpreter|>",
)  # fmt: skip
# Qwen3's 26 added tokens, ids 151643.. in the Qwen3/Intern-S1 layouts
QWEN3_ADDED = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
)  # fmt: skip
_SP_SPACE = regex.compile("\u2581+")


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


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; tokenizer files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _not_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


class DynamicTokenizer:
    """Encode/decode text with the base BPE and per-domain SentencePiece vocabularies.

    base: an HF `tokenizers.Tokenizer` (byte-level BPE, no added tokens).
    domain_models: domain name -> serialized SentencePiece model (bytes).
    offsets: domain name -> first id of its pieces.
    special_tokens: token string -> id (control tokens and domain tags).
    auto_detect: domains detected without tags (only those with a model).
    """

    scheme = "opens1"  # how text is segmented; InternS1Tokenizer (interns1.py) has "interns1"

    def __init__(
        self,
        base,
        domain_models: dict[str, bytes],
        offsets: dict[str, int],
        special_tokens: dict[str, int],
        auto_detect: Iterable[str] = ("smiles", "protein", "dna"),
        vocab_size: int | None = None,
        provenance: dict | None = None,
    ):
        import sentencepiece as spm

        self.base = base
        self.n_base = base.get_vocab_size(with_added_tokens=False)
        self.domain_models = dict(domain_models)
        self.offsets = dict(offsets)
        self.sp = {}
        for name, proto in self.domain_models.items():
            if name not in offsets:
                raise ValueError(f"domain {name!r} has a model but no id offset")
            self.sp[name] = spm.SentencePieceProcessor(model_proto=proto)
        self.special_tokens = dict(special_tokens)
        self.auto_detect = frozenset(d for d in auto_detect if d in self.sp)
        self.provenance = dict(provenance or {})
        top = [self.n_base] + [i + 1 for i in self.special_tokens.values()]
        top += [offsets[n] + sp.get_piece_size() for n, sp in self.sp.items()]
        self.vocab_size = max(max(top), vocab_size or 0)
        # explicit tags are honoured only when both tags have ids and their domain a model
        self._tag_names = frozenset(
            t.strip("</>") for d, tags in DOMAIN_TAGS.items() if d in self.sp for t in tags
            if t in self.special_tokens and f"</{t.strip('</>')}>" in self.special_tokens
        )  # fmt: skip
        self._check_layout()
        self._id_to_special = {i: s for s, i in self.special_tokens.items()}
        self._build_tables()
        self._foreign = {d: self._foreign_pattern(sp) for d, sp in self.sp.items()}

    # ------------------------------------------------------------ construction

    @classmethod
    def from_parts(cls, base, domain_models: dict[str, bytes], provenance: dict | None = None) -> "DynamicTokenizer":
        """The OpenS1 layout: base, then control tokens and tags, then the domain pieces."""
        import sentencepiece as spm

        n = base.get_vocab_size(with_added_tokens=False)
        specials = {}
        for t in CONTROL_TOKENS + tuple(t for d in DOMAINS for t in DOMAIN_TAGS[d]):
            specials[t] = n + len(specials)
        offsets, nxt = {}, n + len(specials)
        for d in DOMAINS:
            if d in domain_models:
                offsets[d] = nxt
                nxt += spm.SentencePieceProcessor(model_proto=domain_models[d]).get_piece_size()
        return cls(base, domain_models, offsets, specials, provenance=provenance)

    def _check_layout(self) -> None:
        ranges = [("base", 0, self.n_base)] + [
            (d, self.offsets[d], self.offsets[d] + sp.get_piece_size()) for d, sp in self.sp.items()
        ]
        ranges += [(s, i, i + 1) for s, i in self.special_tokens.items()]
        ranges.sort(key=lambda r: r[1])
        for (n1, _, e1), (n2, s2, _) in zip(ranges, ranges[1:]):
            if s2 < e1:
                raise ValueError(f"overlapping id ranges in the tokenizer layout: {n1!r} and {n2!r} at id {s2}")

    def _build_tables(self) -> None:
        from .base import token_bytes

        table: list[bytes] = [b""] * self.vocab_size
        self._kind = bytearray(self.vocab_size)  # 0 hole, 1 base, 2 special, 3 domain
        for tok, i in self.base.get_vocab(with_added_tokens=False).items():
            table[i] = token_bytes(tok)
            self._kind[i] = 1
        for s, i in self.special_tokens.items():
            table[i] = s.encode("utf-8")
            self._kind[i] = 2
        for d, sp in self.sp.items():
            off = self.offsets[d]
            for j in range(sp.get_piece_size()):
                if sp.is_byte(j):
                    table[off + j] = bytes([int(sp.id_to_piece(j)[3:5], 16)])
                elif not (sp.is_unknown(j) or sp.is_control(j)):
                    table[off + j] = sp.id_to_piece(j).replace("\u2581", " ").encode("utf-8")
                self._kind[off + j] = 3
        self._bytes = table

    @staticmethod
    def _foreign_pattern(sp):
        """Characters a domain model cannot encode losslessly, sent to the base BPE instead:
        always a literal U+2581 (SentencePiece decodes it as a space), spaces if the model
        has no piece for its space symbol, and, for a model
        without byte fallback (Intern-S1's), every character absent from its pieces,
        which would otherwise become <unk> (Intern-S1 also falls back to BPE there)."""
        if any(sp.is_byte(j) for j in range(sp.get_piece_size())):
            if sp.is_unknown(sp.piece_to_id("\u2581")):
                # a model that never saw a space byte-encodes the space *symbol*: lossy
                return regex.compile("[\u2581 ]+")
            return _SP_SPACE
        chars = set()
        for j in range(sp.get_piece_size()):
            if not (sp.is_unknown(j) or sp.is_control(j) or sp.is_unused(j)):
                chars.update(sp.id_to_piece(j).replace("\u2581", " "))
        chars.discard("\u2581")
        cls = "".join(regex.escape(c) for c in sorted(chars))
        return regex.compile(f"[^{cls}]+|\u2581+" if cls else ".+", regex.S)

    # ------------------------------------------------------------ properties

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        doms = ", ".join(f"{d}={sp.get_piece_size()}@{self.offsets[d]}" for d, sp in self.sp.items())
        return f"DynamicTokenizer(vocab_size={self.vocab_size}, base={self.n_base}, {doms})"

    def token_to_id(self, token: str) -> int:
        """Id of a special token (or a base-vocabulary token string); KeyError if absent."""
        if token in self.special_tokens:
            return self.special_tokens[token]
        i = self.base.token_to_id(token)
        if i is None:
            raise KeyError(f"{token!r} is not a special token or base token of this tokenizer")
        return i

    def id_to_token(self, i: int) -> str:
        """A readable name for an id: base token, special token, or 'domain:piece'."""
        if i in self._id_to_special:
            return self._id_to_special[i]
        if 0 <= i < self.n_base:
            return self.base.id_to_token(i)
        for d, sp in self.sp.items():
            j = i - self.offsets[d]
            if 0 <= j < sp.get_piece_size():
                return f"{d}:{sp.id_to_piece(j)}"
        raise KeyError(f"id {i} is outside this tokenizer's vocabulary")

    def encode_special(self, name: str) -> int:
        """The id of a control token (the only way, with the chat renderer, to emit one)."""
        if name not in self.special_tokens:
            raise KeyError(f"unknown special token {name!r}; known: {sorted(self.special_tokens)}")
        return self.special_tokens[name]

    @property
    def eos_token_id(self) -> int:
        return self.special_tokens["<|im_end|>"]

    @property
    def pad_token_id(self) -> int:
        return self.special_tokens["<|endoftext|>"]

    @property
    def bos_token_id(self) -> None:
        return None  # Qwen-style: no BOS

    def domain_of(self, i: int) -> str | None:
        """'base', 'special', a domain name, or None for an unused id."""
        k = self._kind[i] if 0 <= i < self.vocab_size else 0
        if k == 1:
            return "base"
        if k == 2:
            return "special"
        if k == 3:
            return next(d for d, sp in self.sp.items() if 0 <= i - self.offsets[d] < sp.get_piece_size())
        return None

    # ------------------------------------------------------------ encoding

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
        try:  # optional here: the exported tokenizer module needs only regex, sentencepiece, tokenizers
            import torch
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
        merged: list[Item] = []
        for it in items:  # text is BPE-encoded across piece boundaries, as in one string
            if it.kind == "text" and merged and merged[-1].kind == "text" and merged[-1].end == it.start:
                merged[-1] = Item("text", merged[-1].start, it.end, None)
            else:
                merged.append(it)
        ((ids, where),) = self._execute([self._plan(stream, merged)], [stream], positions=True)
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

    def _items(self, text: str, mode: str, base: int) -> list["Item"]:
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

    def _plan(self, stream: str, items: list["Item"]) -> list["Job"]:
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

    def _execute(self, plans: list[list["Job"]], texts, positions: bool = False):
        """Run the jobs of every plan with one batched call per vocabulary. Returns, per plan,
        (ids, stream position of each token or None)."""
        bpe_texts: list[str] = []
        sp_texts: dict[str, list[str]] = {d: [] for d in self.sp}
        slots = []  # per job: index into its batch
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
        try:
            bpe = self._bpe(bpe_texts)
            sp_ids = {d: self._run_sp(d, xs) for d, xs in sp_texts.items() if xs}
        except (TypeError, ValueError):  # the libraries reject what is not valid Unicode
            bad = next((t for t in texts if _not_utf8(t)), None)
            if bad is not None:
                raise ValueError(f"text is not valid Unicode (lone surrogate?): {bad[:40]!r}") from None
            raise
        out = []
        for plan, row in zip(plans, slots):
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
            out.append((ids, where))
        return out

    # ------------------------------------------------------------ decoding

    def id_to_bytes(self, i: int) -> bytes:
        return self._bytes[i]

    def decode_bytes(self, ids: Iterable[int], skip_special_tokens: bool = False) -> bytes:
        table, kind = self._bytes, self._kind
        n = self.vocab_size
        try:
            if skip_special_tokens:
                return b"".join(table[i] for i in ids if kind[i] != 2)
            return b"".join(table[i] for i in ids)
        except (IndexError, TypeError):
            bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < n]
            raise ValueError(f"token ids outside [0, {n}): {bad[:5]}") from None

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`; skip_special_tokens drops control tokens and domain tags."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        if any(i < 0 for i in ids):
            raise ValueError(f"negative token id in {ids[:8]}...")
        return self.decode_bytes(ids, skip_special_tokens).decode("utf-8", errors="replace")

    def decode_batch(self, batch: Iterable[Iterable[int]], skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(ids, skip_special_tokens) for ids in batch]

    # ------------------------------------------------------------ chat

    def apply_chat_template(self, messages, tools=None, *, enable_thinking: bool = True,
                            add_generation_prompt: bool = True, tokenize: bool = True,
                            special_tokens_in_content: bool = False):
        """Chat messages (text only; the Processor renders images) -> a flat list of ids, or with
        tokenize=False the rendered string (chat.py: Intern-S1's template and its safety rule)."""
        from .chat import render_ids, render_text

        if not tokenize:
            return render_text(messages, tools, enable_thinking=enable_thinking, add_generation_prompt=add_generation_prompt)
        return render_ids(self, messages, tools, enable_thinking=enable_thinking, add_generation_prompt=add_generation_prompt,
                          special_tokens_in_content=special_tokens_in_content)[0]

    # ------------------------------------------------------------ save / load

    def layout(self) -> dict:
        return {
            "format": FORMAT,
            "version": 1,
            "vocab_size": self.vocab_size,
            "base": "base.json",
            "special_tokens": self.special_tokens,
            "domains": {
                d: {"model": f"{d}.model", "offset": self.offsets[d], "size": sp.get_piece_size()} for d, sp in self.sp.items()
            },
            "auto_detect": sorted(self.auto_detect),
            "provenance": self.provenance,
            "scheme": self.scheme,
        }

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the tokenizer as a directory that `load_tokenizer(directory)` reads back."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write(out / "base.json", self.base.to_str().encode("utf-8"))
        for d, proto in self.domain_models.items():
            _atomic_write(out / f"{d}.model", proto)
        # the layout last: a directory with a layout file is complete
        _atomic_write(out / LAYOUT_FILE, json.dumps(self.layout(), indent=1, ensure_ascii=False).encode("utf-8"))
        return out

    @classmethod
    def from_directory(cls, directory: str | os.PathLike) -> "DynamicTokenizer":
        from tokenizers import Tokenizer

        d = Path(directory)
        meta = json.loads((d / LAYOUT_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{d / LAYOUT_FILE}: not an OpenS1 tokenizer layout (format={meta.get('format')!r})")
        base = Tokenizer.from_file(str(d / meta["base"]))
        models, offsets = {}, {}
        for name, info in meta["domains"].items():
            path = d / info["model"]
            if not path.is_file():
                raise FileNotFoundError(f"tokenizer directory {str(d)!r} lacks {info['model']!r}")
            models[name] = path.read_bytes()
            offsets[name] = int(info["offset"])
        kwargs = {}
        scheme = meta.get("scheme", "opens1")
        if scheme == "interns1":  # Intern-S1's tokenizer rules, kept through a save
            from .interns1 import InternS1Tokenizer

            cls = InternS1Tokenizer
            kwargs["added_flags"] = {t: tuple(f) for t, f in meta.get("added_flags", {}).items()}
        elif scheme != "opens1":
            raise ValueError(f"{d / LAYOUT_FILE}: unknown tokenizer scheme {scheme!r}")
        return cls(
            base, models, offsets, {k: int(v) for k, v in meta["special_tokens"].items()},
            auto_detect=meta.get("auto_detect", ("smiles", "protein", "dna")),
            vocab_size=meta.get("vocab_size"), provenance=meta.get("provenance"), **kwargs,
        )  # fmt: skip


# ---------------------------------------------------------------- other layouts


def from_interns1_dir(directory: str | os.PathLike):
    """An Intern-S1 HF tokenizer directory, read with Intern-S1's own rules (interns1.py)."""
    from .interns1 import from_interns1_dir as load

    return load(directory)


def qwen3_tokenizer(tiktoken_path: str | os.PathLike, domains: str | os.PathLike | None = None) -> DynamicTokenizer:
    """Qwen3's exact BPE (from qwen.tiktoken) with OpenS1's domain vocabularies on top.

    Ids 0..151642 are Qwen3's BPE, 151643..151668 its 26 added tokens, then OpenS1's
    other control tokens and tags, then the domain pieces. `domains`: a tokenizer
    directory whose domain models to use (default: the bundled large ones, sized for
    real models, else the default ones)."""
    from .base import base_from_tiktoken

    base = base_from_tiktoken(tiktoken_path)
    n = base.get_vocab_size(with_added_tokens=False)
    if domains is None:
        domains = ASSETS / "large" if (ASSETS / "large" / LAYOUT_FILE).is_file() else ASSETS
    donor = DynamicTokenizer.from_directory(domains)
    specials = {t: n + i for i, t in enumerate(QWEN3_ADDED)}
    for t in CONTROL_TOKENS + tuple(t for d in DOMAINS for t in DOMAIN_TAGS[d]):
        specials.setdefault(t, n + len(specials))
    offsets, nxt = {}, n + len(specials)
    for d in DOMAINS:
        if d in donor.sp:
            offsets[d] = nxt
            nxt += donor.sp[d].get_piece_size()
    return DynamicTokenizer(
        base, {d: donor.domain_models[d] for d in offsets}, offsets, specials,
        provenance={"source": "qwen3+opens1", "tiktoken": str(tiktoken_path)},
    )  # fmt: skip


def load_tokenizer(path: str | os.PathLike | None = None) -> DynamicTokenizer:
    """The tokenizer at `path`:

    None                    the default tokenizer bundled with the package
    an OpenS1 directory     written by `save_pretrained` (has opens1_tokenizer.json)
    an Intern-S1 HF dir     vocab.json + merges.txt + tokenizer_*.model + tokenizer_config.json
    a .tiktoken file        Qwen3's BPE (qwen.tiktoken) under OpenS1's domain vocabularies
    """
    if path is None:
        if not (ASSETS / LAYOUT_FILE).is_file():
            raise FileNotFoundError(
                f"the bundled tokenizer is missing from {ASSETS}; build it with `opens1 tokenizer train --out {ASSETS}`"
            )
        return DynamicTokenizer.from_directory(ASSETS)
    p = Path(path).expanduser()
    if p.is_file() and p.suffix == ".tiktoken":
        return qwen3_tokenizer(p)
    if not p.exists():
        raise FileNotFoundError(f"no tokenizer at {str(p)!r}")
    if p.is_dir() and (p / LAYOUT_FILE).is_file():
        return DynamicTokenizer.from_directory(p)
    if p.is_dir() and (p / "vocab.json").is_file():
        return from_interns1_dir(p)
    raise ValueError(
        f"{str(p)!r} is not a tokenizer: expected an OpenS1 directory ({LAYOUT_FILE}), an HF "
        "directory with vocab.json + merges.txt, or a .tiktoken file"
    )

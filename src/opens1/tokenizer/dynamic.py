"""The dynamic scientific tokenizer: byte-level BPE for prose, SentencePiece per domain.

Id layout (one table, disjoint ranges, so decoding is context-free):

    [0, n_base)                  base byte-level BPE (HF `tokenizers`)
    special tokens               control tokens and domain tags (their own ids)
    [offset_d, offset_d + n_d)   domain d's SentencePiece pieces (piece id + offset)

The OpenS1 layout puts the specials right after the base, then SMILES, IUPAC,
protein and DNA pieces. An Intern-S1 HF directory keeps its own layout and rules
(interns1.py, a subclass that changes how text is split into jobs).

Encoding (encoding.py) runs in two stages for a whole batch: text -> jobs, then one
batched call per vocabulary. Control-token strings in text (`<|im_end|>`, `<think>`, ...)
are plain text by default (the base BPE has no added tokens); `split_special_tokens=False`
parses them, and the chat renderer parses them in the template's own text only
(`encode_pieces`). Domain tags in text are honoured (they are content markup).

Decoding maps every id to its bytes through one precomputed table and decodes UTF-8
once (invalid sequences, e.g. a generation cut inside a character, become U+FFFD).
No Unicode normalisation anywhere: decode(encode(x)) == x for every valid string.

Only relative imports: hf.py copies this module into exported tokenizer directories.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import regex
import sentencepiece as spm
from tokenizers import Tokenizer

from .atomic import atomic_write
from .base import token_bytes
from .chat import render_ids, render_text
from .encoding import Encoding
from .vocab import CONTROL_TOKENS, DOMAIN_TAGS, DOMAINS, FORMAT, LAYOUT_FILE

_SP_SPACE = regex.compile("\u2581+")


class DynamicTokenizer(Encoding):
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
        *,
        auto_detect: Iterable[str] = ("smiles", "protein", "dna"),
        vocab_size: int | None = None,
        provenance: dict | None = None,
    ):
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
        return self.decode_bytes(ids, skip_special_tokens=skip_special_tokens).decode("utf-8", errors="replace")

    def decode_batch(self, batch: Iterable[Iterable[int]], skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in batch]

    # ------------------------------------------------------------ chat

    def apply_chat_template(self, messages, tools=None, *, enable_thinking: bool = True,
                            add_generation_prompt: bool = True, tokenize: bool = True,
                            special_tokens_in_content: bool = False):
        """Chat messages (text only; the Processor renders images) -> a flat list of ids, or with
        tokenize=False the rendered string (chat.py: Intern-S1's template and its safety rule)."""
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
        """Write the tokenizer as a directory that `load_tokenizer(directory)` (load.py) reads back."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "base.json", self.base.to_str().encode("utf-8"))
        for d, proto in self.domain_models.items():
            atomic_write(out / f"{d}.model", proto)
        # the layout last: a directory with a layout file is complete
        atomic_write(out / LAYOUT_FILE, json.dumps(self.layout(), indent=1, ensure_ascii=False).encode("utf-8"))
        return out

    @classmethod
    def from_layout(cls, directory: str | os.PathLike, meta: dict) -> "DynamicTokenizer":
        """The tokenizer saved in `directory`, whose layout file holds `meta` (load.py reads
        the file and picks the class of its scheme)."""
        d = Path(directory)
        base = Tokenizer.from_file(str(d / meta["base"]))
        models, offsets = {}, {}
        for name, info in meta["domains"].items():
            path = d / info["model"]
            if not path.is_file():
                raise FileNotFoundError(f"tokenizer directory {str(d)!r} lacks {info['model']!r}")
            models[name] = path.read_bytes()
            offsets[name] = int(info["offset"])
        return cls(
            base, models, offsets, {k: int(v) for k, v in meta["special_tokens"].items()},
            auto_detect=meta.get("auto_detect", ("smiles", "protein", "dna")),
            vocab_size=meta.get("vocab_size"), provenance=meta.get("provenance"), **cls.layout_kwargs(meta),
        )  # fmt: skip

    @staticmethod
    def layout_kwargs(meta: dict) -> dict:
        """Constructor arguments of this class's own that `layout()` saved."""
        return {}

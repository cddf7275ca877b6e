"""The base byte-level BPE: building it from vocab.json/merges.txt or a tiktoken file.

The base is always an HF `tokenizers.Tokenizer` (Rust, fast) with Qwen2's
pre-tokenizer regex, the GPT-2 byte-to-unicode alphabet and NO normaliser: Qwen's
own tokenizer.json applies NFC, which is lossy (decode(encode(x)) != x for
decomposed accents), so ours does not. The base carries no added tokens; control
tokens live in the dynamic tokenizer's own table, so their strings in user text are
tokenized as ordinary bytes.

tiktoken files store only ranks (token bytes -> rank). HF BPE needs merges; a
token's merge is recovered by running byte-pair merging on its own bytes with the
ranks below it until two parts remain (the standard conversion). Ranks become ids.
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

# Qwen2/Qwen3's pre-tokenizer: words, single digits, punctuation runs, newlines.
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


@lru_cache(maxsize=1)
def unicode_to_byte() -> dict[str, int]:
    return {c: b for b, c in byte_to_unicode().items()}


def token_bytes(token: str) -> bytes:
    """A byte-level BPE token string (e.g. 'Ġthe') -> its bytes (b' the')."""
    table = unicode_to_byte()
    return bytes(table[c] for c in token)


def bytes_token(b: bytes) -> str:
    table = byte_to_unicode()
    return "".join(table[x] for x in b)


def set_byte_level(tok: Tokenizer) -> Tokenizer:
    """Give `tok` Qwen2's pre-tokenizer and the byte-level decoder (no normaliser); returns it."""
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def build_base(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    """An HF byte-level BPE tokenizer with Qwen2's pre-tokenizer and no normaliser."""
    return set_byte_level(Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False)))


def base_from_vocab_merges(vocab_path: str | Path, merges_path: str | Path):
    """The base of an HF (Qwen2-style) tokenizer directory: vocab.json + merges.txt."""
    vocab = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
    merges = []
    for line in Path(merges_path).read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#version"):
            continue
        a, b = line.split(" ")
        merges.append((a, b))
    return build_base(vocab, merges)


def read_tiktoken(path: str | Path) -> dict[bytes, int]:
    """A .tiktoken file: one `base64(token) rank` per line."""
    ranks = {}
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)
            except ValueError as e:
                raise ValueError(f"{path}:{n}: not a tiktoken line ('base64 rank')") from e
    return ranks


def _merge_of(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The last merge that builds `token`: byte-pair merging with the ranks below its own."""
    limit = ranks[token]
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, best_i = limit, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best:
                best, best_i = r, i
        if best_i < 0:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    if len(parts) != 2:
        raise ValueError(f"tiktoken token {token!r} cannot be built from lower-ranked merges")
    return parts[0], parts[1]


def vocab_merges_from_tiktoken(path: str | Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """vocab (byte-level strings -> rank) and merges (in rank order) of a tiktoken file."""
    ranks = read_tiktoken(path)
    vocab = {bytes_token(t): r for t, r in ranks.items()}
    merges = []
    for t, _ in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(t) > 1:
            a, b = _merge_of(t, ranks)
            merges.append((bytes_token(a), bytes_token(b)))
    return vocab, merges


def base_from_tiktoken(path: str | Path):
    """An HF BPE equal to a tiktoken encoding with Qwen2's pattern (e.g. qwen.tiktoken)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tiktoken file {str(path)!r} does not exist")
    vocab, merges = vocab_merges_from_tiktoken(path)
    return build_base(vocab, merges)

"""Loading a tokenizer: the bundled default, a saved directory, an Intern-S1 HF directory or a
.tiktoken file (docs/tokenizer.md). The one module that knows every tokenizer class.

Only relative imports: hf.py copies this module into exported tokenizer directories.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .base import base_from_tiktoken
from .dynamic import DynamicTokenizer
from .interns1 import InternS1Tokenizer, from_interns1_dir
from .vocab import CONTROL_TOKENS, DOMAIN_TAGS, DOMAINS, FORMAT, LAYOUT_FILE, QWEN3_ADDED

ASSETS = Path(__file__).resolve().parent / "assets"
# a saved layout's "scheme" -> the class whose rules it keeps
SCHEMES = {cls.scheme: cls for cls in (DynamicTokenizer, InternS1Tokenizer)}


def from_directory(directory: str | os.PathLike) -> DynamicTokenizer:
    """A directory written by `save_pretrained`, as the class of its scheme."""
    d = Path(directory)
    meta = json.loads((d / LAYOUT_FILE).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{d / LAYOUT_FILE}: not an OpenS1 tokenizer layout (format={meta.get('format')!r})")
    scheme = meta.get("scheme", "opens1")
    if scheme not in SCHEMES:
        raise ValueError(f"{d / LAYOUT_FILE}: unknown tokenizer scheme {scheme!r}")
    return SCHEMES[scheme].from_layout(d, meta)


def qwen3_tokenizer(tiktoken_path: str | os.PathLike, domains: str | os.PathLike | None = None) -> DynamicTokenizer:
    """Qwen3's exact BPE (from qwen.tiktoken) with OpenS1's domain vocabularies on top.

    Ids 0..151642 are Qwen3's BPE, 151643..151668 its 26 added tokens, then OpenS1's
    other control tokens and tags, then the domain pieces. `domains`: a tokenizer
    directory whose domain models to use (default: the bundled large ones, sized for
    real models, else the default ones)."""
    base = base_from_tiktoken(tiktoken_path)
    n = base.get_vocab_size(with_added_tokens=False)
    if domains is None:
        domains = ASSETS / "large" if (ASSETS / "large" / LAYOUT_FILE).is_file() else ASSETS
    donor = from_directory(domains)
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
        return from_directory(ASSETS)
    p = Path(path).expanduser()
    if p.is_file() and p.suffix == ".tiktoken":
        return qwen3_tokenizer(p)
    if not p.exists():
        raise FileNotFoundError(f"no tokenizer at {str(p)!r}")
    if p.is_dir() and (p / LAYOUT_FILE).is_file():
        return from_directory(p)
    if p.is_dir() and (p / "vocab.json").is_file():
        return from_interns1_dir(p)
    raise ValueError(
        f"{str(p)!r} is not a tokenizer: expected an OpenS1 directory ({LAYOUT_FILE}), an HF "
        "directory with vocab.json + merges.txt, or a .tiktoken file"
    )

"""Stand-ins for an Intern-S1 tokenizer directory, in the real format.

The real directory holds vocab.json + merges.txt (Qwen3's BPE), three SentencePiece models
(tokenizer_SMILES / IUPAC / FASTA.model; not public) and tokenizer_config.json with the 48
added tokens. The stand-in has the same files: the BPE is OpenS1's small base (fast tests)
or Qwen3's exact BPE from qwen.tiktoken (slow tests); the SentencePiece models are trained
here with Intern-S1's sizes (256 SMILES, 512 IUPAC, 512 FASTA pieces) and, like the real
ones, no byte fallback; the added tokens sit at the real ids relative to the BPE size
(data/interns1/real_added_vocab.json), so with Qwen3's BPE every id is the real one.
"""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import sentencepiece as spm

DATA = Path(__file__).resolve().parent / "data" / "interns1"
REAL_ADDED = json.loads((DATA / "real_added_vocab.json").read_text(encoding="utf-8"))
QWEN3_BPE_SIZE = 151643
DOMAIN_TAGS = ("<SMILES>", "</SMILES>", "<SELFIES>", "</SELFIES>", "<IUPAC>", "</IUPAC>", "<FASTA>", "</FASTA>")


def _sp(texts, size) -> bytes:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buf, vocab_size=size, model_type="bpe",
        normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False,
        character_coverage=1.0, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, minloglevel=2, num_threads=1,
        max_sentence_length=1 << 16,
    )  # fmt: skip
    return buf.getvalue()


_MODELS: dict[str, bytes] = {}


def domain_models() -> dict[str, bytes]:
    """The three SentencePiece stand-ins (trained once per process, on the embedded data)."""
    if not _MODELS:
        from opens1.tokenizer.corpora import csv_column, iupac_corpus, proteins

        sm = list(itertools.islice(csv_column(None, "smiles/train.csv", "SMILES"), 3000))
        _MODELS["SMILES"] = _sp(sm, 256)
        _MODELS["IUPAC"] = _sp(list(iupac_corpus(None, n=3000)), 512)
        _MODELS["FASTA"] = _sp(list(proteins(None)), 512)
    return _MODELS


def added_tokens(n: int) -> dict[str, int]:
    """Intern-S1's 48 added tokens for a BPE of n tokens (the real ids when n = 151,643)."""
    return {t: i - QWEN3_BPE_SIZE + n for t, i in REAL_ADDED.items()}


def make_interns1_dir(path: Path, vocab: dict, merges: list[str], *, config: str = "full",
                      flags: dict[str, dict] | None = None) -> int:
    """Write a stand-in directory; returns the BPE size n. config: "full" (all 48 added
    tokens), "no_domain_tags" (the config lists no domain tags), or "none" (no
    tokenizer_config.json). flags: per token AddedToken flags (lstrip, rstrip, single_word)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    for name, proto in domain_models().items():
        (path / f"tokenizer_{name}.model").write_bytes(proto)
    n = len(vocab)
    if config != "none":
        added = added_tokens(n)
        if config == "no_domain_tags":
            added = {t: i for t, i in added.items() if t not in DOMAIN_TAGS}
        decoder = {}
        for t, i in sorted(added.items(), key=lambda kv: kv[1]):
            f = (flags or {}).get(t, {})
            decoder[str(i)] = {"content": t, "lstrip": f.get("lstrip", False), "normalized": False,
                               "rstrip": f.get("rstrip", False), "single_word": f.get("single_word", False),
                               "special": True}
        cfg = {"tokenizer_class": "InternS1Tokenizer", "added_tokens_decoder": decoder}
        (path / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    return n


def small_vocab_merges() -> tuple[dict, list[str]]:
    """OpenS1's bundled small base BPE as vocab.json / merges.txt content."""
    from opens1.tokenizer import load_tokenizer

    model = json.loads(load_tokenizer().base.to_str())["model"]
    return model["vocab"], [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]


def qwen3_vocab_merges(tiktoken_path: Path) -> tuple[dict, list[str]]:
    from opens1.tokenizer.base import vocab_merges_from_tiktoken

    vocab, merges = vocab_merges_from_tiktoken(tiktoken_path)
    return vocab, [f"{a} {b}" for a, b in merges]

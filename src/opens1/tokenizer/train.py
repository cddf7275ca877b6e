"""Train the tokenizer's vocabularies from the real corpora in a data root (corpora.py).

Two kinds of vocabulary:

* the base: a small byte-level BPE (HF `tokenizers`, Qwen2's pre-tokenizer regex)
  trained on offline English/math prose. It is the default for the tiny models;
  the real checkpoints use Qwen3's 151,643-token BPE instead (`load.qwen3_tokenizer`).
* the domain vocabularies: one SentencePiece BPE model per domain (SMILES,
  IUPAC, protein, DNA). Every model is lossless by construction: identity
  normalisation, no dummy prefix, whitespace kept as is, byte fallback for any
  character the model has never seen (so a domain span never yields <unk>).
"""

from __future__ import annotations

import io
import random
import time
from collections.abc import Iterable

import sentencepiece as spm
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from opens1.common.paths import data_root
from opens1.tokenizer.base import set_byte_level
from opens1.tokenizer.train_config import TrainConfig
from opens1.tokenizer.corpora import dna_corpus, iupac_corpus, prose_corpus, protein_corpus, smiles_corpus
from opens1.tokenizer.dynamic import DynamicTokenizer

__all__ = ["TrainConfig", "dna_corpus", "iupac_corpus", "prose_corpus", "protein_corpus", "smiles_corpus",
           "train_base_bpe", "train_many", "train_sentencepiece"]


def train_base_bpe(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE with Qwen2's pre-tokenizer and no normaliser (lossless)."""
    tok = set_byte_level(Tokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def train_sentencepiece(texts: Iterable[str], vocab_size: int, max_piece: int = 16, model_type: str = "bpe", *,
                        seed: int = 0, max_sentences: int = 600_000) -> bytes:
    """A lossless SentencePiece model (serialized proto bytes). Corpora over `max_sentences`
    are subsampled here with a seeded generator: SentencePiece's own sampling is not
    reproducible across processes, and without sampling it would keep only the head."""
    texts = [t for t in texts if t]
    if len(texts) > max_sentences:
        texts = random.Random(seed).sample(texts, max_sentences)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type=model_type,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        byte_fallback=True,
        character_coverage=1.0,
        split_digits=False,
        split_by_number=False,
        split_by_unicode_script=False,
        max_sentencepiece_length=max_piece,
        max_sentence_length=1 << 16,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        unk_id=0,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        hard_vocab_limit=False,
        num_threads=2,
        minloglevel=2,
    )
    return buf.getvalue()


def build_corpora(root, cfg: TrainConfig) -> tuple[list[str], dict[str, list[str]]]:
    """The prose and the per-domain corpora, sampled as `cfg` says (n_smiles, augment, seed)."""
    prose = list(prose_corpus(root))
    corpora = {
        "smiles": list(smiles_corpus(root, cfg)),
        "iupac": list(iupac_corpus(root, n=cfg.n_iupac, seed=cfg.seed)),
        "protein": list(protein_corpus(root)),
        "dna": list(dna_corpus(root, seed=cfg.seed)),
    }
    return prose, corpora


def train_many(root, outs: dict, log=print) -> list:
    """Train several tokenizers (out dir -> TrainConfig) from corpora built once.
    The corpora follow the first config's sampling settings (n_smiles, augment, seed)."""
    t0 = time.perf_counter()
    root = data_root(root)
    log(f"[tokenizer] data root {root}")
    prose, corpora = build_corpora(root, next(iter(outs.values())))
    log("[tokenizer] corpora: " + ", ".join(f"{k} {len(v)} strings" for k, v in corpora.items())
        + f" ({time.perf_counter() - t0:.0f}s)")
    result = []
    bases = {}
    for out, cfg in outs.items():
        if cfg.base_vocab not in bases:
            bases[cfg.base_vocab] = train_base_bpe(prose, cfg.base_vocab)
        domain_models = {}
        for name, size, kind in (
            ("smiles", cfg.smiles_vocab, "bpe"),
            ("iupac", cfg.iupac_vocab, "bpe"),
            ("protein", cfg.protein_vocab, cfg.protein_model_type),
            ("dna", cfg.dna_vocab, "bpe"),
        ):
            domain_models[name] = train_sentencepiece(corpora[name], size, 16, kind, seed=cfg.seed)
            log(f"[tokenizer] {name}: {size} pieces ({kind}) at {time.perf_counter() - t0:.0f}s")
        prov = {"data_root": str(root), **vars(cfg)}
        tok = DynamicTokenizer.from_parts(bases[cfg.base_vocab], domain_models, provenance=prov)
        tok.save_pretrained(out)
        log(f"[tokenizer] wrote {out}: {tok!r}")
        result.append(tok)
    return result

"""The tokenizer trainer's settings: vocabulary sizes and corpus sampling (train.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    """Vocabulary sizes (SentencePiece sizes include 256 byte-fallback pieces and <unk>).

    The default is compact for the tiny models (their embedding is vocab x 128); `large()`
    sizes the domain vocabularies for real models on Qwen3's 151k BPE, where a few
    thousand more rows cost nothing and proteins need ~8k pieces to beat Qwen3 by 1.3x."""

    base_vocab: int = 6144  # incl. the 256-byte alphabet
    smiles_vocab: int = 2048
    iupac_vocab: int = 512
    # 8,192 unigram pieces: 1.33x Qwen3's characters per token on the proteome of an organism
    # the vocabulary never saw (C. diphtheriae, predicted from its genome), 1.39x on held-out
    # proteins of the training organism; 4,608 gave 1.25x / 1.31x (bench/tokenizer_compression.py)
    protein_vocab: int = 8192
    dna_vocab: int = 512
    # unigram compresses proteins ~8% better than BPE at equal size; BPE wins (and trains
    # much faster) on the large SMILES and DNA corpora
    protein_model_type: str = "unigram"
    n_smiles: int = 120_000  # MOSES train molecules sampled (before augmentation)
    n_qm9: int | None = None  # QM9 training rows (None: all 90% not held out)
    n_reactions: int = 30_000  # USPTO val reactions
    n_iupac: int = 30_000  # generated IUPAC-style names
    n_selfies: int = 20_000  # SELFIES of held-in MOSES molecules (needs the optional `selfies`)
    augment: float = 0.5  # share of molecules that also get RDKit alternative forms
    seed: int = 0

    @classmethod
    def large(cls) -> "TrainConfig":
        return cls(smiles_vocab=4096, iupac_vocab=1024, protein_vocab=8192, dna_vocab=2048)

    @classmethod
    def fast(cls) -> "TrainConfig":
        """The default vocabulary sizes (same id layout) from smaller corpora: well under a
        minute, for a speedrun that finds the bundled vocabularies missing."""
        return cls(n_smiles=15_000, n_qm9=8_000, n_reactions=2_000, n_iupac=10_000, n_selfies=2_000,
                   protein_model_type="bpe")

    @classmethod
    def quick(cls) -> "TrainConfig":
        """Seconds, for tests: small vocabularies and a few thousand molecules."""
        return cls(base_vocab=1024, smiles_vocab=512, iupac_vocab=320, protein_vocab=400, dna_vocab=300,
                   n_smiles=2000, n_qm9=1000, n_reactions=300, n_iupac=2000, n_selfies=300,
                   protein_model_type="bpe")  # unigram training takes tens of seconds

    @classmethod
    def preset(cls, name: str) -> "TrainConfig":
        """A named preset: "default" and "large", the shipped sizes; "fast", default sizes from smaller
        corpora; "quick", tiny, for tests."""
        presets = {"default": cls, "large": cls.large, "fast": cls.fast, "quick": cls.quick}
        if name not in presets:
            raise ValueError(f"unknown tokenizer training preset {name!r}; known: {sorted(presets)}")
        return presets[name]()

    def set_sizes(self, spec: str) -> None:
        """Vocabulary sizes from e.g. 'protein=4608,smiles=2048' (base, smiles, iupac, protein, dna)."""
        for item in filter(None, spec.split(",")):
            name, _, value = item.partition("=")
            field = f"{name.strip()}_vocab"
            if not hasattr(self, field) or not value.strip().isdigit():
                raise ValueError(f"expected e.g. 'protein=4608,smiles=2048' (base, smiles, iupac, protein, dna), got {item!r}")
            setattr(self, field, int(value))

"""From a TrainConfig to this rank's packed micro-batch stream: read the sources
(data/sources.py), tokenize for the stage, pack (data/packing.py), fingerprint.

    stream, hashes = build_stream(cfg, tokenizer, processor, rank=0, world_size=1)

Every rank reads and tokenizes the same documents (cheap at the sizes a CPU or a small
GPU run uses) and the packing plan is a pure function of them, so the ranks agree on
the global order without communicating. The fingerprint of the token documents is
recorded in checkpoints: resuming on different data is refused unless forced.
"""

from __future__ import annotations

from opens1.data.packing import PackedStream
from opens1.data.sources import build_documents, load_mixture
from opens1.train.checkpointing import fingerprint_documents
from opens1.train.config import TrainConfig


def build_documents_for(cfg: TrainConfig, tokenizer=None, processor=None) -> list:
    samples = load_mixture(cfg.sources, cfg.data_root, samples_per_unit=cfg.samples_per_source, seed=cfg.seed)
    docs = build_documents(samples, cfg.stage, tokenizer, processor)
    if not docs:
        raise ValueError(f"the sources {cfg.sources!r} gave no trainable documents for stage {cfg.stage!r}")
    return docs


def build_stream(cfg: TrainConfig, tokenizer=None, processor=None, rank: int = 0, world_size: int = 1,
                 docs: list | None = None) -> tuple[PackedStream, dict]:
    """(this rank's PackedStream, {"documents": sha256}) for a config."""
    docs = docs if docs is not None else build_documents_for(cfg, tokenizer, processor)
    pad = getattr(tokenizer, "pad_token_id", None)
    stream = PackedStream(docs, cfg.seq_len, cfg.micro_batch_size, seed=cfg.seed, rank=rank, world_size=world_size,
                          balanced=cfg.balanced_packing, window=cfg.balance_window, pad_id=pad if pad is not None else 0,
                          chunk_long=cfg.stage == "pretrain")  # never cut a conversation in two
    return stream, {"documents": fingerprint_documents(stream.docs)}

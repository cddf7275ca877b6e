"""From a TrainConfig to this rank's packed micro-batch stream: read the sources
(data/sources.py) and your own files (data/user.py), tokenize for the stage, pack
(data/packing.py), fingerprint.

    stream, hashes = build_stream(cfg, tokenizer, processor, rank=0, world_size=1)

Every rank reads and tokenizes the same documents (cheap at the sizes a CPU or a small
GPU run uses) and the packing plan is a pure function of them, so the ranks agree on
the global order without communicating. The fingerprint of the token documents is
recorded in checkpoints: resuming on different data is refused unless forced.
"""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING

from opens1.data.packing import PackedStream
from opens1.data.sources import build_documents, load_mixture
from opens1.data.user import DataError, read_samples

if TYPE_CHECKING:
    from opens1.train.config import TrainConfig


def build_documents_for(cfg: TrainConfig, tokenizer=None, processor=None) -> list:
    samples = []
    if cfg.sources:
        samples = load_mixture(cfg.sources, cfg.data_root, samples_per_unit=cfg.samples_per_source, seed=cfg.seed)
    if cfg.data_files:  # every row of your own files, mixed in with the sources
        samples += read_samples([f for f in cfg.data_files.split(",") if f])
        random.Random(cfg.seed).shuffle(samples)
    docs = _documents(samples, cfg.stage, tokenizer, processor)
    if not docs:
        what = " + ".join(filter(None, [cfg.sources and f"sources {cfg.sources!r}", cfg.data_files]))
        raise ValueError(f"{what or 'no data'} gave no trainable documents for stage {cfg.stage!r}")
    return docs


def _documents(samples: list, stage: str, tokenizer, processor) -> list:
    """build_documents, with a row of your own files named file:line when it cannot be rendered."""
    if not any("where" in s.meta for s in samples):
        return build_documents(samples, stage, tokenizer, processor)
    docs = []
    for s in samples:
        try:
            docs += build_documents([s], stage, tokenizer, processor)
        except (ValueError, FileNotFoundError, OSError) as e:
            if "where" not in s.meta:
                raise
            raise DataError(f"{s.meta['where']}: {e}") from e
    return docs


def build_stream(cfg: TrainConfig, tokenizer=None, processor=None, *, rank: int = 0, world_size: int = 1,
                 docs: list | None = None) -> tuple[PackedStream, dict]:
    """(this rank's PackedStream, {"documents": sha256}) for a config."""
    docs = docs if docs is not None else build_documents_for(cfg, tokenizer, processor)
    pad = getattr(tokenizer, "pad_token_id", None)
    stream = PackedStream(docs, cfg.seq_len, cfg.micro_batch_size, seed=cfg.seed, rank=rank, world_size=world_size,
                          balanced=cfg.balanced_packing, window=cfg.balance_window, pad_id=pad if pad is not None else 0,
                          chunk_long=cfg.stage == "pretrain")  # never cut a conversation in two
    return stream, {"documents": fingerprint_documents(stream.docs)}


def fingerprint_documents(docs) -> str:
    """sha256 over the token ids and labels of a list of packing.Documents."""
    h = hashlib.sha256()
    for d in docs:
        h.update(d.input_ids.numpy().tobytes())
        h.update(d.labels.numpy().tobytes())
        if d.pixel_values is not None:
            h.update(str(tuple(d.pixel_values.shape)).encode())
    return h.hexdigest()

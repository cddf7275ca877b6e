"""Packing variable-length documents into fixed token budgets, and balancing them across ranks.

A *document* is one training sample: token ids, labels (-100 = no loss) and optional
images / time series. A *row* is several documents concatenated into at most `seq_len`
tokens, with `doc_ids` marking which document every token belongs to (the model never
attends across documents and restarts positions at each one). A *micro-batch* is
`micro_batch_size` rows padded to the longest of them.

Design choices
- Rows are variable length: a micro-batch is padded only to its own longest row, so
  what matters for speed is that rows in one micro-batch (and on all ranks at one step)
  have similar lengths.
- Intern-S1's Variable-Length Balanced Strategy (VLBS): pack documents randomly into
  buckets, slide a window over the buckets and sort each window by length, then cut the
  sorted window into micro-batches. Adjacent micro-batches have similar lengths, and
  ranks take micro-batches round-robin (rank r gets global micro-batch g with
  g % world == r), so all ranks at one step hold similar work. Without it a rank with
  short rows waits for the rank with long rows at every FSDP collective.
- The global order of micro-batches does not depend on the number of ranks: 2 ranks
  with 1 micro-batch each see exactly what 1 rank with 2 accumulated micro-batches sees,
  which is what the FSDP-versus-single parity test relies on.
- The stream is a pure function of (documents, seed, epoch, position), so its state is
  two integers and resuming is exact.
- The first token of every document gets label -100: under the next-token shift it would
  otherwise be predicted from the previous document's last token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

IGNORE = -100


@dataclass
class Document:
    input_ids: torch.Tensor  # [L] int64
    labels: torch.Tensor  # [L] int64, -100 = no loss
    pixel_values: torch.Tensor | None = None  # [n_tiles, 3, S, S] for this document's images
    time_series: list[torch.Tensor] | None = None  # each [T_i, C_i]
    sampling_rates: list[float] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        self.input_ids = torch.as_tensor(self.input_ids, dtype=torch.long).flatten()
        self.labels = torch.as_tensor(self.labels, dtype=torch.long).flatten()
        if self.input_ids.shape != self.labels.shape:
            raise ValueError(f"input_ids {tuple(self.input_ids.shape)} and labels {tuple(self.labels.shape)} differ")
        if len(self.input_ids) == 0:
            raise ValueError("empty document")

    def __len__(self) -> int:
        return int(self.input_ids.numel())

    @property
    def is_multimodal(self) -> bool:
        return self.pixel_values is not None or bool(self.time_series)

    @property
    def n_loss_tokens(self) -> int:
        return int((self.labels[1:] != IGNORE).sum())


@dataclass
class PackedBatch:
    """One micro-batch: B rows padded to T tokens."""

    input_ids: torch.Tensor  # [B, T]
    labels: torch.Tensor  # [B, T]
    doc_ids: torch.Tensor  # [B, T]; padding is its own document
    pixel_values: torch.Tensor | None = None  # [N_tiles, 3, S, S], row-major document order
    time_series: list[torch.Tensor] | None = None
    sampling_rates: list[float] | None = None
    n_docs: int = 0
    sources: list[str] = field(default_factory=list)
    pad_start: torch.Tensor | None = None  # [B] where padding begins in each row

    @property
    def n_tokens(self) -> int:
        """Real (non-padding) tokens."""
        return int(self.attention_mask.sum())

    @property
    def attention_mask(self) -> torch.Tensor:
        """[B, T] bool, False on padding."""
        if self.pad_start is None:
            return torch.ones_like(self.input_ids, dtype=torch.bool)
        pos = torch.arange(self.input_ids.shape[1], device=self.input_ids.device)[None, :]
        return pos < self.pad_start.to(pos.device)[:, None]

    @property
    def n_loss_tokens(self) -> int:
        return int((self.labels[:, 1:] != IGNORE).sum())

    def model_inputs(self) -> dict:
        """Keyword arguments for the model's forward (without labels)."""
        out = {"input_ids": self.input_ids, "doc_ids": self.doc_ids}
        if self.pixel_values is not None:
            out["pixel_values"] = self.pixel_values
        if self.time_series:
            out["time_series"] = self.time_series
            out["sampling_rates"] = self.sampling_rates
        return out

    def to(self, device, dtype: torch.dtype | None = None) -> "PackedBatch":
        pv = self.pixel_values
        if pv is not None:
            pv = pv.to(device=device, dtype=dtype or pv.dtype)
        ts = [t.to(device) for t in self.time_series] if self.time_series else self.time_series
        return PackedBatch(
            self.input_ids.to(device), self.labels.to(device), self.doc_ids.to(device), pv, ts,
            self.sampling_rates, self.n_docs, self.sources, self.pad_start,
        )


# ---------------------------------------------------------------- documents


def prepare_documents(docs: Sequence[Document], seq_len: int, chunk: bool = True) -> tuple[list[Document], int]:
    """Make every document fit one row: text documents longer than `seq_len` are cut into
    chunks (pretraining; chunk=False drops them instead, for conversations whose second
    half would lose its prompt); multimodal ones cannot be cut (that would split an
    image's tokens) and are dropped. Returns (documents, number dropped)."""
    out: list[Document] = []
    dropped = 0
    for d in docs:
        if len(d) <= seq_len:
            out.append(d)
        elif d.is_multimodal or not chunk:
            dropped += 1
        else:
            for s in range(0, len(d), seq_len):
                ids, lab = d.input_ids[s : s + seq_len], d.labels[s : s + seq_len]
                if len(ids) >= 2 and (lab[1:] != IGNORE).any():
                    out.append(Document(ids, lab, source=d.source))
    return out, dropped


# ---------------------------------------------------------------- packing into rows


def pack_greedy(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Next-fit in the given order: append to the open row until the next document does not fit."""
    rows: list[list[int]] = []
    cur: list[int] = []
    used = 0
    for i, n in enumerate(lengths):
        if n > budget:
            raise ValueError(f"document {i} has {n} tokens, more than the row budget {budget}")
        if cur and used + n > budget:
            rows.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    if cur:
        rows.append(cur)
    return rows


def pack_best_fit(lengths: Sequence[int], budget: int, buffer: int = 256) -> list[list[int]]:
    """Best-fit decreasing inside consecutive buffers of `buffer` documents: near-full rows,
    while documents stay close to their position in the (shuffled) stream."""
    rows: list[list[int]] = []
    for start in range(0, len(lengths), buffer):
        idx = sorted(range(start, min(start + buffer, len(lengths))), key=lambda i: -lengths[i])
        bins: list[list[int]] = []
        free: list[int] = []
        for i in idx:
            n = lengths[i]
            if n > budget:
                raise ValueError(f"document {i} has {n} tokens, more than the row budget {budget}")
            # the fullest row that still fits this document
            best, best_free = -1, budget + 1
            for b, f in enumerate(free):
                if n <= f < best_free:
                    best, best_free = b, f
            if best < 0:
                bins.append([i])
                free.append(budget - n)
            else:
                bins[best].append(i)
                free[best] -= n
        rows.extend(bins)
    return rows


def row_cost(doc_lengths: Sequence[int]) -> float:
    """Relative compute of one row: tokens (the MLPs) plus per-document attention (l^2 / 1024)."""
    return float(sum(doc_lengths)) + sum(l * l for l in doc_lengths) / 1024.0


def order_microbatches(row_keys: Sequence[float], micro_batch_size: int, *, balanced: bool,
                       window: int = 32) -> list[list[int]]:
    """Group rows into micro-batches (lists of row indices), in global training order.

    row_keys: what to balance, one number per row (its length, or its row_cost).
    balanced=False: consecutive rows. balanced=True (VLBS): windows of
    `window * micro_batch_size` rows are sorted by key before cutting (a larger window
    means closer neighbours: 32 keeps 8 ranks within a few % of each other), so each
    micro-batch, and the neighbouring micro-batches that the other ranks take at the same
    step, hold rows of similar length. A trailing partial micro-batch is dropped."""
    order = list(range(len(row_keys)))
    if balanced:
        span = max(1, window) * micro_batch_size
        order = [i for s in range(0, len(order), span)
                 for i in sorted(order[s : s + span], key=lambda i: (row_keys[i], i))]
    n = len(order) // micro_batch_size
    return [order[k * micro_batch_size : (k + 1) * micro_batch_size] for k in range(n)]


def padding_stats(row_docs: Sequence[Sequence[int]], micro_batches: Sequence[Sequence[int]], world_size: int = 1,
                  pad_multiple: int = 8) -> dict:
    """Statistics of micro-batches dealt round-robin to `world_size` ranks.

    row_docs: the document lengths of every row. Returns
      padding_fraction  pad slots / all slots, each micro-batch padded to its longest row
      rank_imbalance_*  mean over steps of (max rank cost / mean rank cost): how long the
                        fastest rank waits for the slowest at every collective (1.0 is
                        perfect). "padded": cost = padded slots (dense masked attention, as
                        OpenS1's model on CPU); "varlen": cost = row_cost (varlen kernels).
      efficiency_*      real work / (ranks x sum over steps of the slowest rank's cost): the
                        fraction of the machine doing useful work, padding and waiting included."""
    slots = real = 0
    padded, varlen = [], []
    busy_p = wall_p = busy_v = wall_v = 0.0
    for s in range(0, len(micro_batches) - world_size + 1, world_size):
        pc, vc = [], []
        for mb in micro_batches[s : s + world_size]:
            lens = [sum(row_docs[i]) for i in mb]
            T = _round_up(max(lens), pad_multiple)
            slots += T * len(mb)
            real += sum(lens)
            pc.append(T * len(mb))
            vc.append(sum(row_cost(row_docs[i]) for i in mb))
        padded.append(max(pc) / (sum(pc) / len(pc)))
        varlen.append(max(vc) / (sum(vc) / len(vc)))
        # every rank waits for the slowest at the step's collectives
        busy_p += sum(sum(row_docs[i]) for mb in micro_batches[s : s + world_size] for i in mb)
        wall_p += world_size * max(pc)
        busy_v += sum(vc)
        wall_v += world_size * max(vc)
    mean = lambda xs: sum(xs) / len(xs) if xs else 1.0  # noqa: E731
    return {
        "padding_fraction": 1.0 - real / slots if slots else 0.0,
        "rank_imbalance_padded": mean(padded),
        "rank_imbalance_varlen": mean(varlen),
        # useful work / (ranks x time): padding and waiting for the slowest rank both count
        "efficiency_padded": busy_p / wall_p if wall_p else 1.0,
        "efficiency_varlen": busy_v / wall_v if wall_v else 1.0,
        "micro_batches": len(micro_batches),
    }


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m if m > 1 else n


# ---------------------------------------------------------------- collation


def collate(rows: Sequence[Sequence[Document]], pad_id: int = 0, pad_multiple: int = 8,
            min_len: int = 0) -> PackedBatch:
    """Concatenate each row's documents and pad the rows to a common length.

    Labels: the first token of every document is -100 (no cross-document prediction);
    padding is -100 and gets its own document id (the number of documents in its row)."""
    T = _round_up(max(max(sum(len(d) for d in row) for row in rows), min_len), pad_multiple)
    B = len(rows)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    doc_ids = torch.zeros((B, T), dtype=torch.long)
    pad_start = torch.zeros(B, dtype=torch.long)
    pixels, series, rates, sources = [], [], [], []
    n_docs = 0
    for b, row in enumerate(rows):
        pos = 0
        for k, d in enumerate(row):
            n = len(d)
            ids[b, pos : pos + n] = d.input_ids
            labels[b, pos : pos + n] = d.labels
            labels[b, pos] = IGNORE
            doc_ids[b, pos : pos + n] = k
            pos += n
            if d.pixel_values is not None:
                pixels.append(d.pixel_values)
            if d.time_series:
                series.extend(d.time_series)
                rates.extend(d.sampling_rates or [])
            sources.append(d.source)
        doc_ids[b, pos:] = len(row)
        pad_start[b] = pos
        n_docs += len(row)
    return PackedBatch(
        ids, labels, doc_ids, torch.cat(pixels) if pixels else None, series or None, rates or None,
        n_docs, sources, pad_start,
    )


# ---------------------------------------------------------------- the resumable stream


class PackedStream:
    """An endless, resumable iterator of this rank's micro-batches.

    Each epoch shuffles the documents (seed + epoch), packs them into rows (randomly,
    as VLBS does, with best-fit inside a buffer to keep rows full), orders rows into
    micro-batches (balanced or not) and deals micro-batch g to rank g % world_size.
    `state_dict()` is {"epoch", "index"}: the next micro-batch of this rank."""

    def __init__(self, docs: Sequence[Document], seq_len: int, micro_batch_size: int, *, seed: int = 0,
                 rank: int = 0, world_size: int = 1, balanced: bool = True, window: int = 32,
                 pad_id: int = 0, pad_multiple: int = 8, pack_buffer: int = 64, packer: str = "best_fit",
                 chunk_long: bool = True):
        if packer not in ("best_fit", "greedy"):
            raise ValueError(f"packer must be best_fit or greedy, got {packer!r}")
        self.packer = packer
        docs, self.dropped = prepare_documents(docs, seq_len, chunk=chunk_long)
        if not docs:
            raise ValueError("no documents fit the sequence length")
        self.docs = docs
        self.seq_len, self.micro_batch_size = seq_len, micro_batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.balanced, self.window = balanced, window
        self.pad_id, self.pad_multiple, self.pack_buffer = pad_id, pad_multiple, pack_buffer
        self.epoch, self.index = 0, 0
        self._plan_epoch = -1
        self._plan: list[list[list[int]]] = []  # this rank's micro-batches: lists of rows of doc indices

    def _rows(self, epoch: int, packer: str) -> list[list[int]]:
        """Rows (lists of document indices) of one epoch: shuffle, pack, shuffle the rows."""
        order = list(range(len(self.docs)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        lengths = [len(self.docs[i]) for i in order]
        packed = pack_best_fit(lengths, self.seq_len, self.pack_buffer) if packer == "best_fit" \
            else pack_greedy(lengths, self.seq_len)
        rows = [[order[j] for j in row] for row in packed]
        random.Random(self.seed * 7_919 + epoch).shuffle(rows)  # random buckets, not sorted by fill
        return rows

    def plan(self, epoch: int, packer: str | None = None, balanced: bool | None = None,
             world_size: int | None = None) -> tuple[list[list[int]], list[list[int]]]:
        """(rows as doc indices, micro-batches as row indices) of one epoch, for all ranks."""
        rows = self._rows(epoch, packer or self.packer)
        ws = world_size or self.world_size
        # balance by row length: a micro-batch is padded to its longest row, so similar
        # lengths mean little padding and equal padded work on every rank
        keys = [sum(len(self.docs[i]) for i in r) for r in rows]
        bal = self.balanced if balanced is None else balanced
        mbs = order_microbatches(keys, self.micro_batch_size, balanced=bal, window=self.window)
        mbs = mbs[: len(mbs) // ws * ws]  # every rank gets the same count
        if not mbs:
            raise ValueError(
                f"too little data: {len(rows)} rows for micro_batch_size={self.micro_batch_size} "
                f"x world_size={ws}"
            )
        return rows, mbs

    def _ensure_plan(self) -> None:
        if self._plan_epoch != self.epoch:
            rows, mbs = self.plan(self.epoch)
            self._plan = [[rows[r] for r in mb] for mb in mbs[self.rank :: self.world_size]]
            self._plan_epoch = self.epoch

    def micro_batches_per_epoch(self) -> int:
        self._ensure_plan()
        return len(self._plan)

    def __iter__(self) -> Iterator[PackedBatch]:
        return self

    def __next__(self) -> PackedBatch:
        self._ensure_plan()
        if self.index >= len(self._plan):
            self.epoch, self.index = self.epoch + 1, 0
            self._ensure_plan()
        mb = self._plan[self.index]
        self.index += 1
        return collate([[self.docs[i] for i in row] for row in mb], self.pad_id, self.pad_multiple)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        if state.get("world_size", self.world_size) != self.world_size:
            # the global order is world-size independent; convert the position
            g = state["index"] * state["world_size"]
            self.epoch, self.index = int(state["epoch"]), g // self.world_size
        else:
            self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._plan_epoch = -1

    def padding_report(self, world_size: int | None = None, epoch: int = 0) -> dict:
        """Padding fraction and rank imbalance of one epoch for both packers, with and
        without balanced ordering: {"greedy/unbalanced": {...}, ...}."""
        ws = world_size or self.world_size
        out = {}
        for packer in ("greedy", "best_fit"):
            for name, bal in (("unbalanced", False), ("balanced", True)):
                rows, mbs = self.plan(epoch, packer=packer, balanced=bal, world_size=ws)
                row_docs = [[len(self.docs[i]) for i in r] for r in rows]
                out[f"{packer}/{name}"] = padding_stats(row_docs, mbs, ws, self.pad_multiple)
        return out

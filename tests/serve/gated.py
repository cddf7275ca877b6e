"""A tokenizer that blocks on a file, for tests of work done in worker processes: it is
pickled into the workers with the Processor, so an Event cannot reach it but a file can.

For a text containing HEAVY it writes its process id to DIR/entered and waits (up to two
minutes) until DIR/release exists; everything else is the wrapped tokenizer's."""

import os
import time
from pathlib import Path


class GatedTokenizer:
    def __init__(self, tok, gate_dir: str):
        self.tok, self.gate_dir = tok, gate_dir

    def __getattr__(self, name):
        if name.startswith("__") or "tok" not in self.__dict__:  # while unpickling
            raise AttributeError(name)
        return getattr(self.tok, name)

    def __len__(self) -> int:
        return len(self.tok)

    def _gate(self, texts) -> None:
        if any("HEAVY" in (t if isinstance(t, str) else t[0]) for t in texts):
            Path(self.gate_dir, "entered").write_text(str(os.getpid()))
            deadline = time.time() + 120
            while not Path(self.gate_dir, "release").exists() and time.time() < deadline:
                time.sleep(0.02)

    # every way in: one text, a batch, or (text, mode) pieces (the chat renderer's)
    def encode(self, text, **kw):
        self._gate([text])
        return self.tok.encode(text, **kw)

    def encode_batch(self, texts, **kw):
        self._gate(texts)
        return self.tok.encode_batch(texts, **kw)

    def encode_pieces(self, pieces, **kw):
        self._gate(pieces)
        return self.tok.encode_pieces(pieces, **kw)

"""What every route shares: the engine, the tokenizer and processor, the served names,
the request budgets and the worker pools (`ServerState`, built by `serve/load.py` or by
tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opens1.infer.engine import Engine
from opens1.processing.images import MAX_IMAGE_PIXELS
from opens1.processing.series import MAX_SERIES_VALUES
from opens1.serve import prepare
from opens1.serve.metrics import Metrics
from opens1.serve.protocol import ServeDefaults
from opens1.serve.workers import Workers


@dataclass
class ServerState:
    """Everything the routes need; the app keeps it as `app.state.s1`."""

    engine: Engine
    tokenizer: Any  # opens1.tokenizer DynamicTokenizer (encode/decode/token_to_id)
    processor: Any  # opens1.Processor
    model_name: str  # the first served name: what responses and /metrics report
    api_key: str | None = None
    aliases: tuple[str, ...] = ()  # further names clients may send (--served-model-name A B ...)
    # chat message content: added-token strings stay text (False), or are parsed as HF/vLLM do
    special_tokens_in_content: bool = False
    defaults: ServeDefaults = field(default_factory=ServeDefaults)
    max_body_bytes: int = 32 * 1024 * 1024
    supports_images: bool = True
    supports_series: bool = True
    # request budgets, checked before any expensive work (serve/prepare.py)
    chars_per_token: int = prepare.CHARS_PER_TOKEN  # prompt characters allowed per token of context
    max_image_pixels: int = MAX_IMAGE_PIXELS  # per image; the processor's decoder never takes more than 40 M
    max_request_pixels: int = prepare.MAX_REQUEST_PIXELS
    max_series_values: int = MAX_SERIES_VALUES
    # worker processes for tokenization, images and RDKit (0: threads in this process)
    cpu_workers: int = 2
    # the Host header check of a keyless server: the address it is bound to, and more names
    bind_host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()
    _render: Workers | None = field(default=None, init=False, repr=False)
    _molecule: Workers | None = field(default=None, init=False, repr=False)
    _grammar_vocab: Any = field(default=None, init=False, repr=False)

    @property
    def served_names(self) -> tuple[str, ...]:
        return (self.model_name, *[a for a in self.aliases if a != self.model_name])

    @property
    def metrics(self) -> Metrics:
        """The engine's Prometheus metrics (made on first use; they observe the engine, so
        servers that share one engine, as tests do, share its numbers)."""
        m = getattr(self.engine, "metrics", None)
        if not isinstance(m, Metrics):
            m = self.engine.metrics = Metrics(self.engine, self.model_name)
            self.engine.on_finish = m.observe
        return m

    @property
    def max_seq_len(self) -> int:
        return self.engine.max_seq_len

    @property
    def vocab_size(self) -> int:
        return int(self.engine.model.config.text.vocab_size)

    @property
    def prompt_char_limit(self) -> int:
        return self.max_seq_len * self.chars_per_token

    @property
    def kv_cache_bytes(self) -> int:
        """The engine's KV cache in memory (for the start-up log line)."""
        kv = self.engine.runner.cache
        tensors = (getattr(kv, "k", None), getattr(kv, "v", None))
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    @property
    def render(self) -> Workers:
        """The pool that tokenizes prompts and decodes images and series (context: the Processor)."""
        if self._render is None:
            self._render = Workers("render", processes=self.cpu_workers, context=self.processor)
        return self._render

    @property
    def molecule(self) -> Workers:
        """The pool that draws molecules (RDKit); its own, so drawings never delay prompts."""
        if self._molecule is None:
            self._molecule = Workers("molecule", processes=min(self.cpu_workers, 1), max_pending=16)
        return self._molecule

    def close(self) -> None:
        """Stop the worker pools (they restart on the next request)."""
        for pool in (self._render, self._molecule):
            if pool is not None:
                pool.close()

"""`GET /metrics`: Prometheus text format, vLLM's metric families under an `opens1:` prefix.

    opens1:num_requests_running             gauge    sequences in the engine's batch now
    opens1:num_requests_waiting             gauge    sequences queued for a slot
    opens1:kv_cache_usage_perc              gauge    share (0..1) of the KV-cache token budget promised
    opens1:prompt_tokens_total              counter  prompt tokens prefilled
    opens1:generation_tokens_total          counter  tokens generated
    opens1:request_success_total            counter  finished sequences, by finished_reason
    opens1:e2e_request_latency_seconds      histogram  submit -> last token, per sequence
    opens1:time_to_first_token_seconds      histogram  submit -> first token
    opens1:request_prompt_tokens            histogram  prompt length per sequence
    opens1:request_generation_tokens        histogram  tokens generated per sequence

Every family carries a `model_name` label (the first served name), as vLLM's do. A
"sequence" is one choice: a request with n = 4 counts four times, as in the engine.
Gauges and token counters are read from the engine when scraped; the histograms are
observed as each sequence ends (the engine's `on_finish`, in its thread;
prometheus_client is thread-safe). Each server has its own registry, so several servers
in one process (tests) do not share numbers.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

PREFIX = "opens1:"
# vLLM's buckets
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0)


def _token_buckets(max_len: int) -> tuple[float, ...]:
    """1, 2, 5, 10, 20, 50, ... up to the context length (vLLM's build_1_2_5_buckets)."""
    out, k = [], 1
    while True:
        for m in (1, 2, 5):
            if m * k > max_len:
                return tuple(float(x) for x in out)
            out.append(m * k)
        k *= 10


class _EngineCollector:
    """Gauges and token counters, read from the engine at scrape time."""

    def __init__(self, engine, model_name: str):
        self.engine, self.labels = engine, [model_name]

    def collect(self):
        load, stats, e = self.engine.load(), self.engine.stats, self.engine
        for name, doc, value in (
            ("num_requests_running", "Number of requests in the model execution batch.", load["running"]),
            ("num_requests_waiting", "Number of requests waiting to be processed.", load["waiting"]),
            ("kv_cache_usage_perc", "KV-cache usage: the share of the cache token budget promised to requests (1 = full).",
             load["reserved_tokens"] / max(1, e.cache_budget_tokens)),
        ):
            g = GaugeMetricFamily(PREFIX + name, doc, labels=["model_name"])
            g.add_metric(self.labels, value)
            yield g
        for name, doc, value in (
            ("prompt_tokens", "Number of prefill tokens processed.", stats.prompt_tokens),
            ("generation_tokens", "Number of generation tokens processed.", stats.generated_tokens),
        ):
            c = CounterMetricFamily(PREFIX + name, doc, labels=["model_name"])
            c.add_metric(self.labels, value)
            yield c


class Metrics:
    """One server's metrics: `observe` is the engine's on_finish; `render` the exposition."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, engine, model_name: str):
        disable_created_metrics()  # no *_created series (vLLM does the same)
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(engine, model_name))
        self.model_name = model_name
        kw = dict(labelnames=["model_name"], registry=self.registry)
        self.success = Counter(PREFIX + "request_success", "Count of successfully processed requests.",
                               labelnames=["model_name", "finished_reason"], registry=self.registry)
        self.e2e = Histogram(PREFIX + "e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                             buckets=E2E_BUCKETS, **kw)
        self.ttft = Histogram(PREFIX + "time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                              buckets=TTFT_BUCKETS, **kw)
        tb = _token_buckets(engine.max_seq_len)
        self.prompt = Histogram(PREFIX + "request_prompt_tokens", "Number of prefill tokens processed.", buckets=tb, **kw)
        self.generation = Histogram(PREFIX + "request_generation_tokens", "Number of generation tokens processed.",
                                    buckets=tb, **kw)

    def observe(self, req, reason: str) -> None:
        now = time.perf_counter()
        name = self.model_name
        self.success.labels(name, "abort" if reason in ("cancelled", "error") else reason).inc()
        self.e2e.labels(name).observe(now - req.submitted_at)
        if req.first_token_at is not None:
            self.ttft.labels(name).observe(req.first_token_at - req.submitted_at)
        self.prompt.labels(name).observe(len(req.prompt_ids))
        self.generation.labels(name).observe(len(req.output_ids))

    def render(self) -> bytes:
        return generate_latest(self.registry)

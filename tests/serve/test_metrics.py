"""GET /metrics: Prometheus text that prometheus_client's own parser reads, with vLLM's
families under opens1:, counting the requests and tokens this server served."""

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from opens1.serve.metrics import _token_buckets

pytestmark = pytest.mark.timeout(120)

FAMILIES = {
    "opens1:num_requests_running": "gauge", "opens1:num_requests_waiting": "gauge",
    "opens1:kv_cache_usage_perc": "gauge", "opens1:prompt_tokens": "counter", "opens1:generation_tokens": "counter",
    "opens1:request_success": "counter", "opens1:e2e_request_latency_seconds": "histogram",
    "opens1:time_to_first_token_seconds": "histogram", "opens1:request_prompt_tokens": "histogram",
    "opens1:request_generation_tokens": "histogram",
}


def scrape(url: str) -> dict:
    r = httpx.get(url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert {n: fams[n].type for n in FAMILIES} == FAMILIES
    out = {}
    for f in fams.values():
        for s in f.samples:
            assert s.labels["model_name"] == "tiny"
            key = s.name + "".join(f"|{k}={v}" for k, v in sorted(s.labels.items()) if k not in ("model_name", "le"))
            if "le" in s.labels:
                continue
            out[key] = out.get(key, 0) + s.value
    return out


def test_metrics_count_requests_and_tokens(client, tiny):
    before = scrape(tiny)
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=5,
                                       n=2, extra_body={"ignore_eos": True})
    c = client.completions.create(model="tiny", prompt="The reaction", max_tokens=3, extra_body={"ignore_eos": True})
    after = scrape(tiny)
    delta = {k: after[k] - before.get(k, 0) for k in after}
    # a chat with n = 2 is two sequences over the same prompt
    assert delta["opens1:prompt_tokens_total"] == 2 * r.usage.prompt_tokens + c.usage.prompt_tokens
    assert delta["opens1:generation_tokens_total"] == r.usage.completion_tokens + c.usage.completion_tokens == 13
    assert delta["opens1:request_success_total|finished_reason=length"] == 3
    assert delta["opens1:e2e_request_latency_seconds_count"] == 3 and delta["opens1:e2e_request_latency_seconds_sum"] > 0
    assert delta["opens1:time_to_first_token_seconds_count"] == 3
    assert delta["opens1:request_generation_tokens_sum"] == 13
    assert after["opens1:num_requests_running"] == after["opens1:num_requests_waiting"] == 0


def test_token_buckets():
    assert _token_buckets(384) == (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0)

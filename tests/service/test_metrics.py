"""``GET /metrics``: the Prometheus text format, parsed as Prometheus would, with one Content-Type."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import post_comment


def test_metrics_are_valid_prometheus_text_with_one_content_type(client: Any, site: dict[str, Any]) -> None:
    assert post_comment(client, site["api_key"], {"content": "counted while pending"}, wait=0).status_code == 202
    answer = client.get("/metrics")
    assert answer.status_code == 200
    # One charset parameter: Flask appended a second "; charset=utf-8" to prometheus_client's content type, a
    # malformed header (RFC 2045: a parameter must not be given more than once) that Prometheus 3, which fails
    # a scrape whose Content-Type it cannot parse, only tolerates because Go's parser lets equal repeats pass.
    content_type = answer.headers["Content-Type"]
    assert content_type.startswith("text/plain; version=") and content_type.lower().count("charset=") == 1
    families = {f.name: f for f in text_string_to_metric_families(answer.get_data(as_text=True))}
    assert {"bouncer_comments", "bouncer_callbacks", "bouncer_queue_length"} <= set(families)
    pending = [s for s in families["bouncer_comments"].samples if s.labels == {"status": "pending", "decision": ""}]
    assert pending and pending[0].value >= 1
    queues = {s.labels["queue"] for s in families["bouncer_queue_length"].samples}
    assert {"score", "callbacks", "default"} <= queues

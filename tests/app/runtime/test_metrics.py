"""GET /metrics: route templates, fallbacks, index sizes, model version."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.app.conftest import AUTH


def test_metrics_content(client: TestClient) -> None:
    client.post("/v1/recommend", json={"domain": "arts", "history": ["arts-1"]})
    client.post("/v1/recommend", json={"domain": "arts"})  # fallback
    client.get("/v1/items/arts-7")
    client.get("/v1/items/arts-8/similar")
    client.get("/v1/nothing/here")
    client.post("/v1/items", json={"item_id": "m1", "domain": "office", "title": "t"}, headers=AUTH)
    text = client.get("/metrics").text
    assert (
        'micrec_http_request_duration_seconds_count{method="POST",route="/v1/recommend"} 2.0'
        in text
    )
    assert 'route="/v1/items/{item_id}"' in text and "arts-7" not in text  # templates, not ids
    assert 'micrec_http_requests_total{method="GET",route="<unmatched>",status="404"} 1.0' in text
    assert 'micrec_recommendations_total{domain="arts",user_embedding="fallback"} 1.0' in text
    assert 'micrec_recommendations_total{domain="arts",user_embedding="inductive"} 1.0' in text
    assert 'micrec_fallback_total{domain="arts"} 1.0' in text
    assert 'micrec_recommended_items_total{domain="arts",source="popular"} 10.0' in text
    assert 'micrec_index_items{domain="office",kind="flat"} 41.0' in text
    assert 'micrec_registered_items{domain="office"} 1.0' in text
    assert 'micrec_model_info{version="fake-v1"} 1.0' in text
    assert "micrec_ready 1.0" in text

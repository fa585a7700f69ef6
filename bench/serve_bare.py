"""The framework-ceiling reference of bench/serve.py: a bare FastAPI app.

``POST /v1/recommend`` returns a constant recommend-shaped response (10 items) without
reading the body; the handler is a plain ``def`` like the service's, so it goes through
the same thread pool hop. Served by bench/serve.py with exactly the uvicorn options of the
real service (``python -m uvicorn bench.serve_bare:app --workers W --http
app.commands.serve:NoDelayHTTPProtocol``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

app = FastAPI(title="bare")

CONSTANT: dict[str, Any] = {
    "domain": "office",
    "n": 10,
    "model_version": "bare",
    "user_embedding": "inductive",
    "items": [
        {"item_id": f"office-{k:07d}", "score": 1.0 - k / 100, "source": "model"} for k in range(10)
    ],
    "history": {"stored": "ok", "known_user": True, "items_used": 9, "unknown_ids": []},
    "warnings": [],
}


@app.post("/v1/recommend")
def recommend() -> dict[str, Any]:
    return CONSTANT

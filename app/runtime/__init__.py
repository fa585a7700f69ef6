"""What every part of a running service uses, whatever it serves: its Prometheus metrics
and their ``/v1/stats`` summary (``telemetry``, ``stats``), the store's health as the
service sees it and the 503s it answers when the store fails (``store_health``),
retry-safe writes with an ``Idempotency-Key`` (``idempotency``), and the background
threads it starts and joins at stop (``background``). It builds on the API's contract and
the store only."""

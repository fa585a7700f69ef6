"""Durable service state behind one ``Store`` contract (``base``): registered items and
their change feed, users' histories and popularity counts, erasures, idempotency records
and the announced bundle version, on Redis (shared by replicas: ``redis*``) or on one
embedded SQLite file (``sqlite*``), with the exports' paged reads (``paging``). Nothing
here imports any other part of the service: what the service makes of a store failure is
app/runtime/store_health.py."""

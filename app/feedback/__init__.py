"""What happens after a recommendation is served: the ``RecommendationRecorder``
(``recording``) gives every recommend answer an id and writes the served list to the store
off the request path; ``Feedback`` (``events``) takes the events clients report on those
lists (POST /v1/feedback), turns the positive ones into interactions and reads the online
metrics back; ``summarise`` (``metrics``) turns the stored counters into CTR, hit rate, MRR
and coverage with their confidence intervals (pure, no store)."""

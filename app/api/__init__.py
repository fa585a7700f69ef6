"""The v1 API's contract, shared by the HTTP layer and the parts of the service that answer
it: request and response bodies (``schemas``), id rules (``ids``), interaction timestamp
bounds (``timestamps``), the errors a request can end with and their statuses
(``errors``), and bounded messages that never echo unbounded input (``validation``).
Nothing here imports any other part of the service."""

"""The catalogue the service serves and grows: ``Items`` (``items``) reads any item and
registers, replaces or deletes cold-start ones (content checked by ``content``, encoded off
the request workers by the encoder process: ``encoding``, ``encoder_process``); the
console's reads of items, pictures and a user's history (``browse``, ``images``) and of the
bundle's evaluation (``reports``). Registrations reach the served model through the
change feed (app/lifecycle)."""

"""The per-domain FAISS indexes that rank a domain's items for a user vector: the
``DomainIndex`` (``domain``) searches a read-only base of the bundle's items (``base``:
exact or IVF, memory-mapped from the serving cache) together with an exact in-memory delta
of the items registered since (``delta``), under a readers-writer lock (``rwlock``).
Nothing here imports any other part of the service."""

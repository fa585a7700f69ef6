"""The MICRec recommendation service (FastAPI + uvicorn); it depends on ``model``, never
the reverse. Its subpackages are layers, each importing only those below it: ``api`` (the
API's contract), ``store`` and ``index``; the settings (``settings.py`` and its groups);
``runtime`` (metrics, store health, idempotency, background threads); ``lifecycle`` (the
model as it serves and how it is loaded and kept current); ``serving`` (the recommend
path); ``catalogue`` and ``users`` (items and users' data); ``learning`` (export and
retraining, offline); ``service.py`` (the composition root); ``http`` (the FastAPI app);
``commands`` and ``cli.py`` (the ``micrec`` program). docs/ARCHITECTURE.md is the map."""

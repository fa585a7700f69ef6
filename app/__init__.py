"""The MICRec recommendation service (FastAPI). Depends on ``model``; never the reverse."""

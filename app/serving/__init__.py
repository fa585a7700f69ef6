"""The recommend path: the ``Recommender`` (``recommend``) checks a request, reads the
user's history from the store and hands the model work to the worker's model thread
(``model_thread``), where the ``Answerer`` (``answering``) answers every request waiting
together: history, the precomputed top-N lists (``topn``), one batched fold-in and one
index search per domain, and the fallback chain (``fallbacks``) for what the model cannot
fill. It reads the served model state and never writes it."""

"""Continuous learning, in processes of their own (never in a request worker): ``micrec
export`` (``export``: the serving bundle's training data plus what the store learned
since), ``micrec retrain`` (``retrain_run``: export, hold out the newest interactions,
train a candidate, gate it, promote or refuse it) and ``micrec trainer``
(``retrain_scheduler``: a retrain on a schedule or after enough new interactions); what
they share with the service (store, registry, serving bundle from the settings) is
``jobs``. They reach the service only through the store and the bundle registry."""

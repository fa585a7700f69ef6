"""The service's subcommands of the ``micrec`` program (app/cli.py adds them to the
library's): ``serve`` (uvicorn workers and the encoder process), ``bundles`` (the bundle
registry), ``export``, ``retrain`` and ``trainer`` (continuous learning, app/learning).
Each module defines ``register(subparsers)``."""

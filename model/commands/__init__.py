"""One module per ``micrec`` subcommand; each defines ``register(subparsers)``."""

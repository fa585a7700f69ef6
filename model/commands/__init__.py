"""One module per ``micrec`` subcommand of the library, each defining
``register(subparsers)``; runner.py parses the command line and runs one of them."""

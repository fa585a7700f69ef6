"""Service subcommands of ``micrec`` (registered through ``app.cli.SERVICE_COMMANDS``)."""

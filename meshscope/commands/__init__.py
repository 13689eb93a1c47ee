"""One module per `meshscope` subcommand: ``add_arguments(parser)`` and ``run(args) -> int``."""

"""`h2k` sub-commands: each module has `register(subparsers)` that adds its parser with `func=run`, and `run(args) -> int`."""

"""The subcommands of `python -m nada`. Each module provides `add_parser(subparsers)`, which adds its
sub-parser and sets `run` (args -> exit code) as its default; `nada.cli` lists them explicitly."""

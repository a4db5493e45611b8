"""The `campusgw` command's entry point, kept free of imports: camera workers start by spawning, which runs
the command's script again in each worker, and everything imported here would be loaded there too."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from gateway.cli import main as cli_main

    return cli_main(argv)

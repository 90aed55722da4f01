"""docs/cli.md, generated from the commands' own --help (run `python -m pyml.clidocs`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pyml.cli import cli

HEADER = """# CLI reference

Generated from `pyml --help` and each command's `--help` by `python -m pyml.clidocs`
(a test fails when this file and the commands disagree). Every command takes dbt's
`--project-dir`, `--profiles-dir` and `--target`, and `--lock-timeout` for DuckDB's
single-writer lock. Exit codes: 0 success, 1 a user error (one line naming the thing and the
fix), 2 drift above the threshold (`pyml drift`), 130 interrupted (Ctrl-C: the transaction
in progress is rolled back; the line says `Interrupted: nothing was written.`, or, where a
command of several models had committed some before, which versions and tables it wrote).
"""


def render() -> str:
    """The whole reference as markdown."""
    parts = [HEADER]
    settings = {**cli.context_settings, "terminal_width": 100, "max_content_width": 100}
    with click.Context(cli, info_name="pyml", **settings) as ctx:
        parts.append(f"## pyml\n\n```\n{cli.get_help(ctx)}\n```\n")
        for name in sorted(cli.list_commands(ctx)):
            command = cli.get_command(ctx, name)
            assert command is not None
            with click.Context(command, info_name=name, parent=ctx,
                               **settings) as sub:
                parts.append(f"## pyml {name}\n\n```\n{command.get_help(sub)}\n```\n")
    return "\n".join(parts)


def main() -> None:
    """Write docs/cli.md (or the path given)."""
    args = sys.argv[1:]
    if len(args) > 1 or (args and args[0].startswith("-")):
        # `--help` once wrote the reference into a file named "--help"
        sys.exit("usage: python -m pyml.clidocs [OUTPUT]  (default: docs/cli.md)")
    out = Path(args[0]) if args else Path("docs/cli.md")
    out.write_text(render())


if __name__ == "__main__":
    main()

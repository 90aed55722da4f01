"""docs/cli.md is the commands' own help, and every command's help has an example."""

from __future__ import annotations

from pathlib import Path

import click

from pyml.cli import cli
from pyml.clidocs import render

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_cli_reference_is_current() -> None:
    assert DOC.read_text() == render(), "docs/cli.md is stale: run `python -m pyml.clidocs`"


def test_every_command_has_help_with_an_example() -> None:
    with click.Context(cli, info_name="pyml") as ctx:
        for name in cli.list_commands(ctx):
            command = cli.get_command(ctx, name)
            assert command is not None and command.help, name
            assert "Example:" in command.help, f"`pyml {name} --help` has no example"

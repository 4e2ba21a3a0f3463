"""docs/cli.md must describe every command and option the CLI has, so it can't silently rot."""

from __future__ import annotations

import re

import click

from taskq.cli import main
from tests.support import ROOT


def sections() -> dict[str, str]:
    """``## `taskq NAME` `` headings (NAME may be ``dead list``) and the text under each."""
    text = (ROOT / "docs" / "cli.md").read_text()
    parts = re.split(r"^##+ `taskq ([^`]+)`$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def leaf_commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    """Every command a user can run, by its full name: ``worker``, ``dead list``, ..."""
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found.update(leaf_commands(command, f"{prefix}{name} "))
        else:
            found[prefix + name] = command
    return found


def test_every_command_and_option_is_in_docs_cli_md():
    documented = sections()
    missing = []
    for name, command in leaf_commands(main).items():
        if name not in documented:
            missing.append(f"command {name}")
            continue
        for param in command.params:
            if param.name == "help":
                continue
            names = [opt for opt in param.opts if opt.startswith("--")] if isinstance(param, click.Option) else [param.human_readable_name]
            if not any(f"`{opt}" in documented[name] for opt in names):
                missing.append(f"{name} {'/'.join(names)}")
    assert not missing, f"docs/cli.md lacks: {', '.join(missing)}"

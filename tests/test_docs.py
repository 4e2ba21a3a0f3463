"""docs/cli.md must describe every command and option the CLI has, so it can't silently rot."""

from __future__ import annotations

import re

import click

from taskq.cli import main
from tests.conftest import ROOT


def sections() -> dict[str, str]:
    text = (ROOT / "docs" / "cli.md").read_text()
    parts = re.split(r"^## `taskq (\S+)`$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def test_every_command_and_option_is_in_docs_cli_md():
    documented = sections()
    missing = []
    for name, command in main.commands.items():
        if name not in documented:
            missing.append(f"command {name}")
            continue
        for param in command.params:
            names = [opt for opt in param.opts if opt.startswith("--")] if isinstance(param, click.Option) else [param.human_readable_name]
            if param.name == "help":
                continue
            if not any(f"`{opt}" in documented[name] for opt in names):
                missing.append(f"{name} {'/'.join(names)}")
    assert not missing, f"docs/cli.md lacks: {', '.join(missing)}"

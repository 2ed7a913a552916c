"""The README's command line is the real one: its synopsis is what argparse prints, and what it
says about the sandbox and the exit statuses holds."""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

from adapters.registry import KNOWN_ADAPTERS
from plugin.commands.cli import EXIT_CODES, build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def synopsis(width: int = 100) -> str:
    """Every command's usage line as argparse prints it (without `usage: `), `--version` too."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    blocks = []
    for p in sub.choices.values():
        f = argparse.HelpFormatter(prog=p.prog, width=width)
        f.add_usage(p.usage, p._actions, p._mutually_exclusive_groups, prefix="")
        blocks.append(f.format_help().strip("\n"))
    blocks.append("cohortkv --version")
    return "\n".join(blocks)


def readme_block(heading: str) -> str:
    section = README.split(f"\n## {heading}\n", 1)[1]
    m = re.search(r"```sh\n(.*?)```", section, re.S)
    assert m is not None, f"no ```sh block under ## {heading}"
    return m.group(1).rstrip("\n")


def test_readme_synopsis_is_argparses() -> None:
    expected = synopsis()
    assert readme_block("Command line") == expected, (
        "README.md's synopsis under '## Command line' differs from argparse's; it should be:\n"
        + expected
    )


def test_the_synopsis_names_every_platform_and_the_sandbox_flag() -> None:
    text = readme_block("Command line")
    assert "{auto," + ",".join(KNOWN_ADAPTERS) + "}" in text.replace("\n", "").replace(" ", "")
    enrich = text.split("cohortkv enrich", 1)[1].split("cohortkv sandbox", 1)[0]
    assert "--sandbox" in enrich


def test_readme_lists_the_exit_statuses_help_prints() -> None:
    for line in EXIT_CODES.splitlines()[1:]:
        m = re.match(r"\s+(\d)\s", line)
        if m:
            assert f"| {m.group(1)} |" in README, f"exit status {m.group(1)} not in README.md"


def test_readme_says_which_commands_use_the_sandbox_without_a_key() -> None:
    assert "every command run without an API key" not in README
    assert "`demo` always runs on the built-in sandbox" in README
    assert "`verify` without a key or URLs" in README


def test_pyproject_summary_names_every_platform_family() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    summary = project["description"]
    assert "OpenRTB" in summary and "query" in summary
    assert project["authors"]


def test_enrich_help_names_every_platform() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = " ".join(sub.choices["enrich"].format_help().split())
    assert "GAM, FreeWheel or AdsWizz" not in text
    assert f"one of: {', '.join(KNOWN_ADAPTERS)}" in text

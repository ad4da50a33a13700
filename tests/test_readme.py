"""The README's best-entry blocks cannot rot: every ``birdsed`` command in them parses as the CLI takes it."""

from __future__ import annotations

import re
import shlex

from birdsed.cli import parse
from tests.conftest import REPO


def _blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## The best entry, step by step", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def test_every_command_of_the_best_entry_parses():
    env = {"ROOT": "ROOT", "k": "0"}
    commands = []
    for block in _blocks():
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("DATA="):
                env["DATA"] = shlex.split(line.split("=", 1)[1])[0].replace("$ROOT", env["ROOT"])
            for part in re.split(r";|&&|\bdo\b|\bdone\b", line):
                part = part.strip()
                if part.startswith("birdsed "):
                    commands.append(part)
    assert len(commands) == 13, commands
    for command in commands:
        expanded = re.sub(r"\$(\w+)", lambda m: env[m.group(1)], command)
        args = parse(shlex.split(expanded)[1:])
        assert args.command in ("teacher", "agile", "train", "infer", "score", "bundle", "choose", "student")
        items = getattr(args, "config_and_overrides", [])
        if items and items[0].startswith("configs/"):  # the shipped config loads with the overrides as written
            from birdsed.commands import config_from_args

            config_from_args([i for i in items if "=runs/" not in i])


def test_the_front_page_fits_a_screen_or_two_and_links_every_docs_page():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150, len(text.splitlines())
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"](docs/{page.name})" in text, page.name


def test_every_birdsed_command_in_the_docs_parses():
    """The reference pages' commands cannot rot either: each ``birdsed ...`` line of their bash blocks parses as the
    CLI takes it (placeholders in capitals stand for values)."""
    commands = []
    for page in sorted((REPO / "docs").glob("*.md")):
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #", 1)[0].strip()
                for part in re.split(r";|&&|\bdo\b|\bdone\b", line):
                    part = part.strip()
                    if part.startswith("birdsed "):
                        commands.append((page.name, part))
    assert len(commands) >= 5, commands
    env = {"ROOT": "ROOT", "DATA": "data.root=ROOT", "k": "0", "TEACHER": "T"}
    for page, command in commands:
        expanded = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(1)), command)
        args = parse(shlex.split(expanded)[1:])
        assert args.command, (page, command)

"""The README and docs/ stand alone: every link resolves inside the repository (files and
heading anchors), nothing points outside it, and no page talks about issues or reviews."""

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    out = set()
    for heading in re.findall(r"^#+ (.+)$", page.read_text(), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_every_link_resolves_inside_the_repository():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                broken.append(f"{page.name}: {target} points outside the repository")
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if ROOT.resolve() not in resolved.parents and resolved != ROOT.resolve():
                broken.append(f"{page.name}: {target} leaves the repository")
            elif not resolved.exists():
                broken.append(f"{page.name}: {target} does not exist")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.name}: #{anchor} is no heading of {resolved.name}")
    assert not broken, broken


def test_no_page_mentions_issues_reviews_or_files_outside_the_repository():
    for page in PAGES:
        text = page.read_text()
        for word in (r"\bissues?\b", r"\breview(er|s)?\b", r"\.\./shared"):
            assert not re.search(word, text, re.I), (page.name, word, re.search(word, text, re.I))


def test_the_first_example_prints_what_the_readme_says(capsys):
    section = (ROOT / "README.md").read_text().split("## First example", 1)[1]
    code, printed = re.findall(r"```(?:python)?\n(.*?)```", section, re.S)[:2]
    exec(compile(code, "README first example", "exec"), {})
    assert capsys.readouterr().out == printed


def test_every_command_option_has_help_and_shows_its_default():
    import argparse

    from iclkit.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"verify", "sizes", "build", "export", "run", "prove", "train", "compare"} <= set(commands)
    parsers = list(commands.items())
    for name, sub in parsers:
        text = sub.format_help()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):  # a command's own commands (iclkit bench build)
                parsers += [(f"{name} {k}", p) for k, p in action.choices.items()]
            assert action.help, (name, action.dest)
            if action.option_strings and not action.required:
                assert f"{action.option_strings[0]}" in text and "(default:" in sub._get_formatter()._get_help_string(action), \
                    (name, action.dest)


def test_the_readme_api_table_names_what_exists():
    import importlib

    section = (ROOT / "README.md").read_text().split("## The API at a glance", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| ") and "iclkit." in line]
    assert len(rows) >= 6
    for names, where in rows:
        modules = re.findall(r"`(iclkit[\w.]*)`", where)
        if not modules:
            continue
        home = importlib.import_module(modules[0]) if "Construction" not in modules[0] else \
            importlib.import_module("iclkit.constructions").Construction
        for name in re.findall(r"`(\w+)`", names):
            if name in ("n",):
                continue
            found = hasattr(home, name) or any(hasattr(importlib.import_module(m), name) for m in modules
                                               if "Construction" not in m)
            assert found, (name, modules)


def test_no_test_depends_on_wall_clock_time():
    """On a busy machine a timed test fails for the machine's sake: no subprocess timeout, no
    elapsed-time assertion (speed targets live in benchmarks/)."""
    for path in sorted((ROOT / "tests").glob("*.py")):
        text = path.read_text()
        assert "timeout" + "=" not in text and "perf_" + "counter" not in text, path.name

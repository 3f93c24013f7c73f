"""The README's measured tables: benchmark scripts print a markdown table and, with
``--out docs/tables/NAME.md``, write it there (:func:`emit`); running this file copies every
such file into the README and docs/*.md verbatim, between ``<!-- include docs/tables/NAME.md -->`` and
``<!-- end include -->``. tests/test_examples.py checks that every included block equals its
file, so a README figure cannot drift from the script that made it."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- include (\S+) -->\n)(.*?)(<!-- end include -->)", re.S)


def emit(lines: list[str], out: str | None) -> None:
    """Write a finished table to ``out`` (when given); the scripts print rows as they come."""
    if out:
        Path(out).write_text("\n".join(lines) + "\n")
        print(f"written to {out}", file=sys.stderr)


def sync(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + (ROOT / m.group(2)).read_text() + m.group(4), text)


DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]  # every file that includes a table

if __name__ == "__main__":
    for document in DOCUMENTS:
        document.write_text(sync(document.read_text()))

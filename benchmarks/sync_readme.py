"""Copy the benchmark tables (docs/tables/*.md) into the README verbatim, between
``<!-- include docs/tables/NAME.md -->`` and ``<!-- end include -->``. tests/test_examples.py
checks that every included block equals its file, so a README figure cannot drift from the
script that made it."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- include (\S+) -->\n)(.*?)(<!-- end include -->)", re.S)


def sync(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + (ROOT / m.group(2)).read_text() + m.group(4), text)


if __name__ == "__main__":
    readme = ROOT / "README.md"
    readme.write_text(sync(readme.read_text()))

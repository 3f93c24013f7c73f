import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


NEEDS = {"06_interpretability.py": "transformer_lens"}  # examples of an optional extra


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_and_agrees(path):
    if path.name in NEEDS:
        pytest.importorskip(NEEDS[path.name])
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for got, exact in re.findall(r"(?:transformer|TransformerLens)\s+(-?[\d.]+)\s+closed form\s+(-?[\d.]+)", out.stdout):
        assert abs(float(got) - float(exact)) <= 1e-8
    for err, bound in re.findall(r"max error ([\d.e+-]+)\s+certified bound ([\d.e+-]+)", out.stdout):
        assert float(err) <= float(bound)


def test_readme_tables_are_the_benchmark_files_verbatim():
    """Every table the README and docs/ include is, character for character, the file a
    benchmark script wrote (benchmarks/tables.py copies them; each names its command)."""
    import re

    root = Path(__file__).parent.parent
    found = 0
    for document in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        blocks = re.findall(r"<!-- include (\S+) -->\n(.*?)<!-- end include -->", document.read_text(), re.S)
        found += len(blocks)
        for path, body in blocks:
            assert body == (root / path).read_text(), (document.name, path)
            assert "Made by `python benchmarks/" in body
    assert found >= 4

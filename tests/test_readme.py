"""The README's ten-line example runs as printed."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(capsys):
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    example = next(b for b in blocks if "GridSearchCV" in b)
    exec(compile(example, str(README), "exec"), {})
    printed = capsys.readouterr().out
    # The search prints its best parameters and a finite best gap closed.
    assert "peruserranker__shrinkage" in printed
    best_score = float(printed.rsplit(maxsplit=1)[-1])
    assert -1.0 < best_score <= 1.0

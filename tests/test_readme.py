"""The README's ten-line example runs as printed, and prints what it says."""

import re
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import cross_val_score

from pllm_sk.model_selection import ColdStartSplit, make_personal_scorer

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(capsys):
    # The first python block after the "Ten lines" heading.
    text = README.read_text().split("\n## Ten lines", 1)[1]
    example = re.search(r"```python\n(.*?)```", text, flags=re.DOTALL)[1]
    assert "GridSearchCV(" in example
    namespace = {}
    exec(compile(example, str(README), "exec"), namespace)
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    pipe, methods, data = namespace["pipe"], namespace["methods"], namespace["data"]
    # It prints the best method and the gap it closes, rounded.
    match = re.fullmatch(r"(\w+)\(.*\) (\S+)", printed)
    assert match, printed
    # Each method's gap closed, recomputed here without the search, on the same folds.
    cv = ColdStartSplit(3, n_support=3, random_state=0)
    scorer = make_personal_scorer(data.oracle, "gap_closed")
    gap_closed = {
        type(method).__name__: cross_val_score(
            clone(pipe).set_params(ranker=method), data.X, data.y, cv=cv, scoring=scorer
        ).mean()
        for method in methods
    }
    best = max(gap_closed, key=gap_closed.get)
    assert match[1] == best
    assert float(match[2]) == round(gap_closed[best], 3)
    # Learning across users beats both the population and each user alone.
    assert gap_closed[best] > gap_closed["PopulationRanker"] + 0.5
    assert gap_closed[best] > gap_closed["PerUserRanker"]
    assert np.isfinite(namespace["search"].cv_results_["mean_test_top1"]).all()

    # The successive-halving block runs on from there, spending max_iter, not rows.
    text = text.split("\n### Successive halving", 1)[1]
    halving = re.search(r"```python\n(.*?)```", text, flags=re.DOTALL)[1]
    exec(compile(halving, str(README), "exec"), namespace)
    search = namespace["halving"]
    # Three candidates at max_iter=10, the best one at 30; rows never subsampled.
    assert search.n_resources_ == [10, 30]
    assert search.cv_results_["n_resources"].tolist() == [10, 10, 10, 30]

"""The README's ten-line example runs as printed, and prints what it says."""

import re
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline

from pllm_sk.baselines import PopulationRanker
from pllm_sk.features import RewardFeatures
from pllm_sk.model_selection import ColdStartSplit, make_personal_scorer

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(capsys):
    # The first python block after the "Ten lines" heading.
    text = README.read_text().split("\n## Ten lines", 1)[1]
    example = re.search(r"```python\n(.*?)```", text, flags=re.DOTALL)[1]
    assert "GridSearchCV(" in example
    namespace = {}
    exec(compile(example, str(README), "exec"), namespace)
    printed = capsys.readouterr().out.strip()
    search, data = namespace["search"], namespace["data"]
    # It prints the best shrinkage and the gap it closes, rounded.
    match = re.fullmatch(r"\{'peruserranker__shrinkage': (\S+)\} (\S+)", printed)
    assert match, printed
    best_params = {"peruserranker__shrinkage": float(match[1])}
    # The printed score is the gap closed by those parameters on the same folds,
    # recomputed here without the search.
    cv = ColdStartSplit(3, n_support=3, random_state=0)
    scorer = make_personal_scorer(data.oracle, "gap_closed")
    gap_closed = cross_val_score(
        clone(namespace["pipe"]).set_params(**best_params),
        data.X,
        data.y,
        cv=cv,
        scoring=scorer,
    )
    assert float(match[2]) == round(gap_closed.mean(), 3)
    # Per-user weights from 3 support prompts close far more of the gap than the
    # population weights alone (measured: 0.778 against 0.068).
    population = cross_val_score(
        make_pipeline(RewardFeatures(namespace["corpus"]), PopulationRanker()),
        data.X,
        data.y,
        cv=cv,
        scoring=scorer,
    )
    assert gap_closed.mean() > population.mean() + 0.5
    assert np.isfinite(search.cv_results_["mean_test_gap_closed"]).all()

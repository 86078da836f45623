"""benchmarks/gpu_check.py runs the paper preset's training step and measures it; on CPU with a tiny model."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_runs_a_tiny_model_on_cpu(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    out = tmp_path / "check.json"
    assert gpu_check.main(["--steps", "3", "--tiny", "--device", "cpu", "--amp", "off", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for what in ("pairs/s:", "MFU:", "matmul peak measured: fp32", "peak memory:"):
        assert what in printed, printed
    r = json.loads(out.read_text())
    assert r["device"] == "cpu" and r["precision"] == "fp32" and r["steps"] == 3 and r["batch"] == 16
    assert r["pairs_per_s"] > 0 and r["step_gflop"] > 0 and r["peak_memory_gb"] > 0
    assert 0 < r["mfu"] < 1

"""Smoke test of benchmarks/bench_engine.py on the tiny random model (keeps the script working)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_engine.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_engine", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_reports_every_number(bench, capsys):
    out = bench.main(["--quick", "--models", "tiny", "--no-memory", "--approx", "8",
                      "--threads", "1", "--repeats", "2", "--json"])
    assert '"scoring_speedup"' in capsys.readouterr().out
    tiny = out["models"]["tiny"]
    assert tiny["scoring"]["max_abs_diff"] < 1e-3  # engine and stock loop score the same
    assert tiny["ttt"]["loss_max_rel_diff"] < 1e-4  # and train on the same batches alike
    for value in (out["scoring_speedup"], out["ttt_step_ratio"], out["matmul_gflops_fp32"],
                  tiny["ttt"]["engine_gflops"], tiny["scoring"]["engine_tokens_per_s"]):
        assert value > 0
    assert -1 <= out["approx_scoring"]["spacings"]["8"]["spearman"] <= 1
    assert set(out["targets_met"]) == {"scoring_speedup>=1.3", "ttt_run_ratio<=0.95"}
    assert tiny["ttt"]["engine_step_s"]["n"] == 2  # one step in each of two runs: medians
    assert 0 < tiny["ttt"]["engine_fraction_of_matmul_peak"]


def test_memory_probe_counts_activations_and_gradients(bench):
    import torch

    seq = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQ"
    full = bench.peak_memory_child("tiny", "all", seq, torch.device("cpu"), 2)
    lora = bench.peak_memory_child("tiny", "lora", seq, torch.device("cpu"), 2)
    assert full["peak_mb"] >= 0 and full["saved_activations_mb"] > 0
    assert lora["gradients_mb"] < full["gradients_mb"] / 5  # adapters only


def test_proteinttt_benchmark_skips_without_a_checkout(tmp_path, capsys):
    script = SCRIPT.with_name("bench_proteinttt.py")
    spec = importlib.util.spec_from_file_location("bench_proteinttt", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--proteinttt", str(tmp_path)]) is None
    assert "skipped: no ProteinTTT checkout" in capsys.readouterr().out


def test_gpu_check_runs_on_cpu_with_the_tiny_model(tmp_path):
    """benchmarks/gpu_check.py is meant for a GPU; on the tiny model on CPU it must still run and
    find the engine equivalent to stock fair-esm (there without bf16)."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT.with_name("gpu_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--device", "cpu", "--models", "tiny", "--length", "40", "--steps", "1",
                       "--repeats", "1", "--fold", "tiny", "--json", str(tmp_path / "gpu.json")])
    assert out["all_equivalent"] and (tmp_path / "gpu.json").is_file()
    row = out["models"]["tiny"]
    assert row["equivalence"]["fp32_marginals_max_abs"] < 1e-3
    assert row["equivalence"]["bf16_ttt_loss_rel"] < 1e-4
    assert row["speed"]["scoring_speedup"] > 0 and row["speed"]["ttt_run_ratio"] > 0
    fold = out["fold"]
    assert len(fold["plddt_per_step"]) == 2 and fold["step_s_median"] > 0

"""The GPU check's code on tiny shapes on the CPU: it runs end to end without Ray, datasets or the hub."""
import json
import os
import subprocess
import sys


def test_gpu_check_tiny_on_cpu_needs_only_torch_transformers_peft(tmp_path):
    code = ("import sys; from benchmarks import gpu_check; "
            f"gpu_check.main(['--tiny', '--device', 'cpu', '--out-dir', {str(tmp_path)!r}]); "
            "loaded = {'ray', 'datasets', 'optuna'} & set(sys.modules); assert not loaded, loaded")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "changed-weights ratio bf16/fp32:" in r.stdout
    f = json.loads((tmp_path / "gpu_check.json").read_text())["figures"]
    p = f["precision"]
    assert p["pass"] and p["bf16_weights"]["changed_fraction"] < 0.5 * p["fp32"]["changed_fraction"]
    assert [row["k"] for row in f["prefix_cache"]["per_k"]] == [16, 32]
    assert all(row["context_tokens"] <= 2048 - 40 and row["icl_cached_ms"] > 0 for row in f["prefix_cache"]["per_k"])
    assert f["throughput"]["tokens_per_s"] > 0 and f["throughput"]["mfu"] is None  # no GPU: no peak to divide by
    assert f["memory"]["cuda_max_allocated_mib"] is None and not f["memory"]["pass"]
    z = f["fsdp"]
    assert z["pass"] and z["ddp"]["measured_mib"] > 0 and z["fsdp"]["estimated_mib"] > 0

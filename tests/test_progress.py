"""The sweep's terminal: trial lines that fit 100 columns, heartbeats while nothing finishes, and
an ETA from each kind of trial's own duration."""
from collections import Counter

from orchestrator.callbacks import Progress, kind

PBFT, ICL = "rte/pbft+lora/smollm2-135m/16shot", "rte/icl/smollm2-135m/16shot"


def record(cell, phase="search", status="completed", error=None, seed=0):
    return {"cell": cell, "phase": phase, "status": status, "data_seed": seed, "error": error,
            "searched": {"train.lr": 0.000188} if phase == "search" else {},
            "history": [{"dev_accuracy": 0.531}], "metrics": {}}


def test_trial_lines_fit_the_width_even_with_long_cells_and_errors(capsys):
    p = Progress(Counter({kind("search", PBFT): 2}), slots=2, width=100)
    p.line(record("mnli_merge_neutral/pbft+bitfit/a-very-long-organisation-name/some-model-13b/32shot"), 95.0)
    p.line(record(PBFT, status="failed", error="ContextError: " + "the demonstrations do not fit; " * 10), 12.0)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(len(line) <= 100 for line in lines)
    assert lines[0].startswith("[1/2] search ") and "lr=0.00019 1m35s" in lines[0]
    assert "FAILED" in lines[1] and "ContextError: the" in lines[1] and lines[1].endswith("…")


def test_eta_uses_each_kinds_own_duration_not_the_first_trial(capsys):
    p = Progress(Counter({kind("replicate", ICL): 4, kind("replicate", PBFT): 2}), slots=2, width=100)
    assert p.eta() == "ETA after the first trial"
    p.line(record(ICL, "replicate"), 30.0)  # ICL is quick ...
    assert p.eta() == "ETA 1m15s"  # ... and until a PBFT trial is seen, the ICL time stands in: (3 + 2) x 30 / 2
    p.line(record(PBFT, "replicate"), 300.0)  # ... PBFT is slow
    assert p.eta() == "ETA 3m15s"  # 3 ICL x 30 s + 1 PBFT x 300 s, over 2 slots
    p.expect(Counter({kind("replicate", PBFT): 1}))
    assert p.total == 3 and p.eta() == "ETA 2m30s"


def test_a_heartbeat_names_the_running_trials_when_the_sweep_is_quiet(capsys):
    p = Progress(Counter({kind("search", PBFT): 3}), slots=2, width=100, heartbeat_s=0)
    p.heartbeat([(PBFT, "epoch 2/4", 75.0), (ICL, "running", 20.0)])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and len(out[0]) <= 100 and "0/3 done, 2 running: " + PBFT + " epoch 2/4 1m15s" in out[0]
    quiet = Progress(Counter({kind("search", PBFT): 3}), heartbeat_s=3600)
    quiet.heartbeat([(PBFT, "epoch 2/4", 75.0)])
    assert capsys.readouterr().out == ""

"""`decide` on hand-made numbers with known answers: the cheaper method past its crossover and not
before, never one outside the tolerance, never a collapsed one, one over the memory limit out with
its reason, probabilities that sum to 1, no crossover where costs are equal."""
import numpy as np
import pytest

from orchestrator import cli
from orchestrator.analysis import decide
from orchestrator.analysis.decide import Method, decide_group
from tests.test_report import write_sweep

SEEDS = list(range(6))


def method(name, acc, adapt_s, serve_s, out=None, spread=0.002):
    jitter = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])  # the seeds move a little, each method alike
    return Method(f"rte/{name}/m/16shot", name, SEEDS, acc + spread * jitter, adapt_s * (1 + 0.01 * jitter),
                  serve_s * (1 + 0.01 * jitter), out=out)


def test_a_method_cheaper_after_100_queries_is_chosen_above_100_and_not_below():
    trained, icl = method("pbft+lora", 0.80, 10.0, 0.1), method("icl", 0.80, 0.0, 0.2)  # 10 s = 100 x (0.2 - 0.1)
    d = decide_group([trained, icl], [10, 50, 500, 5000], tolerance=0.05, where="rte")
    assert d.chosen[10] == d.chosen[50] == "icl" and d.chosen[500] == d.chosen[5000] == "pbft+lora"
    assert d.probability[10]["icl"] > 0.95 and d.probability[5000]["pbft+lora"] > 0.95
    (x,) = d.crossovers
    assert x["measurable"] and x["dearer_to_adapt"] == "pbft+lora" and x["queries"] == pytest.approx(100, rel=0.05)
    for q in d.queries:
        assert sum(d.probability[q].values()) == pytest.approx(1.0)


def test_a_method_worse_than_the_best_by_more_than_the_tolerance_is_never_chosen_nor_a_collapsed_one():
    best = method("pbft+lora", 0.80, 10.0, 0.1)
    cheap_but_worse = method("icl", 0.70, 0.0, 0.001)  # 0.10 below: outside a 0.01 tolerance whatever it costs
    collapsed = method("cd+lora", 0.85, 0.0, 0.001, out="collapsed in domain in 1 of 6 seeds")
    d = decide_group([best, cheap_but_worse, collapsed], [10, 1e6], tolerance=0.01, where="rte")
    for q in d.queries:
        assert d.probability[q]["icl"] == 0 and d.probability[q]["cd+lora"] == 0 and d.chosen[q] == "pbft+lora"
        assert sum(d.probability[q].values()) == pytest.approx(1.0)
    assert "cd+lora: collapsed" not in " ".join(decide.sentences([d]))  # a method that is out is not offered


def test_equal_costs_give_no_measurable_crossover():
    a = method("cd+lora", 0.80, 10.0, 0.1, spread=0.0)
    b = Method("rte/pbft+lora/m/16shot", "pbft+lora", SEEDS, a.accuracy.copy(), a.adapt[::-1].copy(), a.serve[::-1].copy())
    (x,) = decide_group([a, b], [100], tolerance=0.01, where="rte").crossovers
    assert not x["measurable"]
    assert "no measurable crossover" in decide.tables([decide_group([a, b], [100], 0.01, "rte")])


def test_decide_reads_a_sweep_and_puts_methods_over_the_memory_limit_out_with_the_reason(tmp_path, capsys):
    write_sweep(tmp_path, seeds=6)  # peak 900 MiB per replicate, serving 800 MiB + the model's size in MB
    assert cli.main(["decide", str(tmp_path), "--queries", "1e2,1e5", "--max-memory-gb", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "no method qualifies" in out and "peak memory 0.9 GiB exceeds --max-memory-gb 0.5" in out
    assert cli.main(["decide", str(tmp_path), "--queries", "1e2,1e5", "--price", "cpu_hour=0.36"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("For 100 queries on rte with large (16 shots), ") and "P = " in first
    assert "($" in out  # money beside device-seconds


@pytest.mark.parametrize("args,message", [(["--queries", "lots"], "--queries lots: give query volumes"),
                                          (["--price", "tpu_hour=3"], "expected cpu_hour=P,gpu_hour=P"),
                                          (["--tolerance", "2"], "--tolerance 2.0")])
def test_bad_decide_options_are_one_line(tmp_path, capsys, args, message):
    write_sweep(tmp_path)
    assert cli.main(["decide", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_the_expected_best_of_k_trials_is_the_mean_best_over_every_k_subset():
    import itertools

    from orchestrator.analysis.tuning import expected_max
    values = [0.52, 0.61, 0.55, 0.70, 0.61, 0.48]
    for k in range(1, len(values) + 1):
        brute = [max(sub) for sub in itertools.combinations(values, k)]
        assert expected_max(values, k) == pytest.approx(sum(brute) / len(brute))
    assert expected_max(values, 1) == pytest.approx(sum(values) / len(values)) and expected_max(values, 6) == 0.70
    with pytest.raises(ValueError, match="between 1 and the 6 trials"):
        expected_max(values, 7)

"""The dry run's power and design: the rule's own detectable difference, no number where the rule has
no power, each task's own evaluation size, a prior measured from records, and the designs that reach
80 % power with what they cost."""

import math

import pytest

from orchestrator import cli
from orchestrator.planning import plan
from orchestrator.analysis import power
from orchestrator.space import load_space
from orchestrator.analysis.stats import detectable, t95
from tests.test_report import write_sweep


def test_three_seeds_get_no_detectable_number_only_the_reason():
    space = load_space("cd_vs_icl", ["data_seeds=[0, 1, 2]"])
    lines = power.plan_lines(space)
    body = [line for line in lines[1:] if not line.startswith("warning")]
    assert body and all("no power" in line and "detected with" not in line for line in body)
    assert any(line.startswith("warning: with 3 data seed(s)") for line in lines)


def test_the_printed_difference_is_the_verdict_rules_at_each_tasks_own_size():
    space = load_space("cd_vs_icl")  # hub ids, no data folder: the official splits' sizes
    lines = "\n".join(power.plan_lines(space))
    assert power.eval_size(space, "mnli")[0] == 9815 and power.eval_size(space, "rte")[0] == 277
    assert power.eval_size(space, "rte", "hans")[0] == 10_000  # one HANS heuristic of three
    prior = power.default_prior()
    rte = detectable(10, power.seed_spread(prior, 277, 277), power.shared_variance(prior, 277))  # every seed: the same 277
    mnli = detectable(10, power.seed_spread(prior, 9815, 9815), power.shared_variance(prior, 9815))
    assert "rte in domain: 18 paired comparison(s), 277 examples each" in lines and f"{rte:.3f} or more" in lines
    assert "mnli in domain: 18 paired comparison(s), 9815 examples each" in lines and f"{mnli:.3f} or more" in lines
    # what the realised interval should be: the seeds' spread, and the 277 shared examples' own
    half = t95(9) * math.sqrt(power.seed_spread(prior, 277, 277) ** 2 / 10 + power.shared_variance(prior, 277))
    assert f"a comparison's 95 % interval about ±{half:.3f}, of which the 277 examples themselves hold" in lines


def test_an_ood_limit_sizes_the_ood_sets_apart_from_the_in_domain_one():
    space = load_space("cd_vs_icl", ["fixed.eval_limit=200", "fixed.ood_limit=64"])
    assert power.eval_size(space, "rte")[0] == 200 and power.eval_size(space, "rte", "hans")[0] == 64
    cell = plan.cells(space)[0]
    assert plan.run_config(space, cell, 0, {}, True).ood_limit == 64


def test_the_dry_run_shows_the_gpus_a_trial_asks_for():
    out = plan.describe(load_space("cd_vs_icl"), has_gpus=False)
    assert "0.5 GPU" in out and "1 GPU" in out and " 0 GPU" not in out


def test_a_prior_is_measured_from_an_earlier_sweeps_paired_differences(tmp_path):
    write_sweep(tmp_path, seeds=4)
    prior = power.prior_from(tmp_path)
    # per seed the methods' accuracies move together (+0.01 per seed): the seeds' own spread is ~0
    assert prior["seed_sd"] == pytest.approx(0.0, abs=0.02) and 0.5 < prior["example_sd"] < 0.8
    assert ("rte", "cd+lora", "small") in prior["seconds"] and "4 data seeds" in prior["source"]


def test_an_ood_sets_prior_is_its_own_comparisons_spread(tmp_path):
    """In domain the handmade methods move together seed by seed (no seed spread); on HANS PBFT swings
    by 0.3 between seeds: the OOD set's prior is its own, a set the prior never compared takes in-domain's."""
    import json
    write_sweep(tmp_path, seeds=4)
    for path in (tmp_path / "trials").glob("*.json"):
        rec = json.loads(path.read_text())
        if rec["config"]["method"] == "pbft" and rec["phase"] == "replicate":
            rec["metrics"]["ood"]["hans"]["accuracy"] = 0.4 + 0.3 * (rec["data_seed"] % 2)
            path.write_text(json.dumps(rec))
    prior = power.prior_from(tmp_path)
    assert prior["sets"]["hans"]["seed_sd"] > 0.1 > prior["seed_sd"]
    assert power.for_set(prior, "hans")["seed_sd"] == prior["sets"]["hans"]["seed_sd"]
    assert power.for_set(prior, "paws_qqp")["seed_sd"] == prior["seed_sd"]
    space = load_space("cd_vs_icl", ["tasks={rte: {ood: [hans]}}", "fixed.ood_limit=64"])
    hans = next(line for line in power.plan_lines(space, prior) if "rte on hans" in line)
    assert "the prior's own" in hans and "comparison(s) on hans" in hans


@pytest.mark.parametrize("folder,message", [("/no/such/folder", "does not exist"), (__file__, "is a file")])
def test_a_prior_folder_that_is_not_a_sweep_gets_its_own_line(folder, message, capsys):
    assert cli.main(["sweep", "--space", "cd_vs_icl", "--dry-run", "--prior", folder]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_a_design_needs_fewer_seeds_with_more_examples_and_names_the_cheaper_lever():
    prior = {"seed_sd": 0.016, "example_sd": 0.65, "effect_sd": 0.0}  # no example effects: seeds are the only limit
    needed = {m: power.seeds_needed(prior, m, 0.05) for m in (64, 128, 277)}
    assert needed[64] > needed[128] > needed[277] >= 6
    assert detectable(needed[277], power.seed_spread(prior, 277)) <= 0.05 < detectable(needed[277] - 1, power.seed_spread(prior, 277))
    space = load_space("cd_vs_icl", ["tasks={rte: {ood: [hans]}}", "models=[facebook/opt-125m]", "shots=[16]"])
    # measured: 100 s a replicate besides its evaluation, 0.1 s an evaluated query: examples are cheap, seeds dear
    seconds = {("rte", v, "opt-125m"): {"fixed": 100.0, "per_query": 0.1, "search": 50.0} for v in ("icl", "cd+lora", "pbft+lora")}
    lines = power.design_lines(space, {**power.default_prior(), **prior, "seconds": seconds}, 0.05, has_gpus=True, slots=2)
    text = "\n".join(lines)
    assert "277 (the whole set: shared by every seed)" in text and "64 (each seed its own subset)" in text
    n = needed[277]  # 256 examples need as many seeds as the whole set (277) and cost a little less
    assert f"cheapest: {n} seeds x 256 examples" in text and "evaluation size is the cheaper lever here: 46 seeds x 32" in text
    assert f"to run it: --set 'data_seeds=[{', '.join(map(str, range(n)))}]' --set fixed.eval_limit=256" in text


def test_detect_asks_for_a_dry_run_and_a_difference_in_range(capsys):
    assert cli.main(["sweep", "--space", "cd_vs_icl", "--detect", "0.05"]) == 2
    assert "add --dry-run" in capsys.readouterr().err
    assert cli.main(["sweep", "--space", "cd_vs_icl", "--dry-run", "--detect", "5"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err


def test_the_dry_run_with_detect_prints_the_designs(capsys):
    assert cli.main(["sweep", "--space", "cd_vs_icl", "--dry-run", "--detect", "0.05", "--set", "shots=[16]",
                     "--set", "models=[facebook/opt-125m]"]) == 0
    out = capsys.readouterr().out
    assert "design: seeds and evaluation size to detect an in-domain difference of 0.050" in out
    # RTE's 277 examples vary too much on their own for 0.05 under the stated prior; MNLI's 9,815 do not
    assert "no design detects 0.050 here: the 277 examples of rte's evaluation set themselves vary" in out
    assert out.count("to run the design with the fewest seeds:") == 1 and "give --prior DIR" in out  # mnli; hub ids


def test_each_pair_of_methods_is_planned_by_its_own_spread_where_the_prior_has_it(tmp_path):
    """Two LoRA students agree on single examples far more than either does with ICL: the prior
    keeps each pair's own spread, the dry run prints each pair's interval from it, and a design
    must give every pair its power."""
    write_sweep(tmp_path, seeds=6)
    prior = power.prior_from(tmp_path)
    assert ("rte", "in_domain", "cd+lora", "icl") in prior["pairs"]
    pair = power.for_pair(prior, "rte", "in_domain", "icl", "cd+lora")  # either order
    assert pair["comparisons"] == 2 and pair["seeds"] == 6  # both models' comparisons of the pair, pooled
    assert power.for_pair(prior, "rte", "in_domain", "icl", "ft+lora") is None  # never compared: the pooled prior
    space = load_space("cd_vs_icl", ["tasks={rte: {ood: [hans]}}", "shots=[16]", "data_seeds=[0, 1, 2, 3, 4, 5, 6, 7]"])
    lines = power.plan_lines(space, prior)
    rows = [line for line in lines if line.startswith("    cd+lora − icl:")]
    own = power.for_pair(prior, "rte", "in_domain", "cd+lora", "icl")
    half = t95(7) * math.sqrt(power.seed_spread(own, 277, 277) ** 2 / 8 + power.shared_variance(own, 277))
    assert rows and f"interval about ±{half:.3f}" in rows[0] and "this pair's own spread in the prior (6 seeds)" in rows[0]
    wide = {**prior, "pairs": {**prior["pairs"], ("rte", "in_domain", "cd+lora", "icl"): {**own, "seed_sd": 0.2}}}
    assert power.seeds_needed(wide["pairs"][("rte", "in_domain", "cd+lora", "icl")], 277, 0.3, 277) > \
        power.seeds_needed(prior, 277, 0.3, 277)
    text = "\n".join(power.design_lines(space, wide, 0.3, has_gpus=True, slots=2))
    needed = power.seeds_needed(wide["pairs"][("rte", "in_domain", "cd+lora", "icl")], 277, 0.3, 277)
    assert f"{'277 (the whole set: shared by every seed)':<44} {needed:>6}" in text  # the hardest pair decides


def test_a_shared_sets_examples_move_every_seed_alike_and_leave_each_seeds_spread():
    prior = {"seed_sd": 0.0, "example_sd": 0.6, "effect_sd": 0.3}
    assert power.seed_spread(prior, 277, 277) == pytest.approx(math.sqrt((0.36 - 0.09) / 277))  # all shared
    assert power.seed_spread(prior, 64) == pytest.approx(math.sqrt(0.36 / 64))  # a pool so large nothing is shared
    assert power.seed_spread(prior, 64, 128) == pytest.approx(math.sqrt((0.36 - 0.09) / 64 + 0.09 * (1 / 64 - 1 / 128)))

"""A researcher's own task, from a file of their own: a sweep on a task this test writes runs end to
end and `decide` answers for it; a tasks file's bad inputs are refused with one line before Ray."""
import csv
import json
import subprocess
import sys

import pytest

from orchestrator import cli
from trainers.data.tasks import DataError, use_tasks_file

POS = ["great", "loved", "superb", "fine", "lovely", "good", "happy", "bright"]
NEG = ["awful", "hated", "dull", "weak", "sad", "poor", "grim", "dark"]


def write_task(folder, train_rows=None, label_words=(" No", " Yes"), text_columns=("text",), classes=("negative", "positive"),
               extra=""):
    """A tasks file with one task, its train split a CSV and its eval split JSON Lines, in `folder`."""
    (folder / "reviews").mkdir(parents=True, exist_ok=True)
    rows = train_rows if train_rows is not None else (
        [{"text": f"{w} film {i}", "stars": "positive"} for i, w in enumerate(POS * 3)]
        + [{"text": f"{w} film {i}", "stars": "negative"} for i, w in enumerate(NEG * 3)])
    with open(folder / "reviews" / "train.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["text", "stars"])
        w.writeheader()
        w.writerows(rows)
    with open(folder / "reviews" / "test.jsonl", "w") as f:
        for i in range(8):
            f.write(json.dumps({"text": f"{(POS if i % 2 else NEG)[i]} show", "stars": i % 2}) + "\n")
    words = ", ".join(f'"{w}"' for w in label_words)
    (folder / "tasks.yaml").write_text(f"""tasks:
  reviews:
    classes: [{', '.join(classes)}]
    text_columns: [{', '.join(text_columns)}]
    label_column: stars
    train: {{path: reviews/train.csv}}
    eval: {{path: reviews/test.jsonl}}
    pattern: {{template: "{{text1}} Was it good?", label_words: [{words}]}}
{extra}""")
    return folder / "tasks.yaml"


def sweep_args(tiny, tasks, results):
    return ["sweep", "--space", "quickstart", "--set", f"models=[{tiny}]", "--set", f"tasks_file={tasks}",
            "--set", "tasks={reviews: {}}", "--set", "shots=[4]", "--set", "data_seeds=[0, 1]", "--set", "search={}",
            "--set", "fixed.n_dev=4", "--set", "fixed.n_unlabeled=4", "--set", "fixed.train.epochs=1",
            "--set", "fixed.serve_queries=4", "--results", str(results)]


@pytest.mark.sweep
def test_a_sweep_on_a_task_of_the_users_own_runs_end_to_end_and_decide_answers_for_it(tmp_path, tiny_opt):
    tasks = write_task(tmp_path)
    r = subprocess.run([sys.executable, "-m", "orchestrator", *sweep_args(tiny_opt, tasks, tmp_path / "results")],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(p.read_text()) for p in (tmp_path / "results" / "quickstart" / "trials").glob("*.json")]
    assert len(recs) == 4 and {x["cell"].split("/")[0] for x in recs} == {"reviews"}
    assert all(x["resolved"]["task_definition"]["label_column"] == "stars" for x in recs)
    assert all(any(k.endswith("train.csv") for k in x["resolved"]["data_fingerprints"]) for x in recs)
    d = subprocess.run([sys.executable, "-m", "orchestrator", "decide", str(tmp_path / "results" / "quickstart"),
                        "--queries", "1e3"], capture_output=True, text=True, timeout=300)
    assert d.returncode == 0 and d.stdout.startswith("For 1,000 queries on reviews with opt (4 shots)"), d.stdout + d.stderr


@pytest.mark.parametrize("change,message", [
    (dict(text_columns=("review",)), "lacks column(s) ['review']"),
    (dict(label_words=(" Definitely", " Yes")), "label word ' Definitely'"),
    (dict(train_rows=[]), "has no rows"),
    (dict(train_rows=[{"text": "meh", "stars": "neutral"}]), "label 'neutral' is not one of"),
    (dict(train_rows=[{"text": f"good {i}", "stars": "positive"} for i in range(40)]), "no training row of class(es) ['negative']"),
])
def test_a_tasks_files_bad_data_is_one_line_before_ray(tmp_path, tiny_opt, change, message, capsys):
    tasks = write_task(tmp_path, **change)
    assert cli.main(sweep_args(tiny_opt, tasks, tmp_path / "results")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Ray dashboard" not in err[0], err


@pytest.mark.parametrize("extra,message", [
    ("    shots: 4\n", "unknown key(s) ['shots']"),
    ("  rte:\n    classes: [a, b]\n", "tasks.rte: the name of a shipped task"),
])
def test_a_tasks_file_that_does_not_fit_the_schema_is_refused_when_it_loads(tmp_path, extra, message):
    tasks = write_task(tmp_path, extra=extra)
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        use_tasks_file(str(tasks))

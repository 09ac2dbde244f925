"""Shared fixtures: tiny random OPT and Llama models, a synthetic data folder, small files in the hub's schema."""
import json
import os

import pytest

os.environ.setdefault("FEWSHOT_PROGRESS", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: threads only contend
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test reaches the network: a hub source fails at once
os.environ.pop("FEWSHOT_DATA_DIR", None)  # tests pass their own data folders

import torch  # noqa: E402

from trainers.data import synthetic  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_opt(tiny_dir):
    return str(synthetic.make_model(tiny_dir / "opt", "opt"))


@pytest.fixture(scope="session")
def tiny_llama(tiny_dir):
    return str(synthetic.make_model(tiny_dir / "llama", "llama"))


@pytest.fixture(scope="session")
def data_dir(tiny_dir):
    return str(synthetic.write_data(tiny_dir / "data"))


def write(path, rows):
    """A JSON Lines file of `rows`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def hub_schema_dir(tmp_path):
    """Small files with the hub's columns and label ids, in ../shared/data's layout."""
    nli = lambda n, labels: [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": labels[i % len(labels)], "idx": i} for i in range(n)]
    write(tmp_path / "glue/mnli/train.jsonl", nli(30, [0, 1, 2]))
    write(tmp_path / "glue/mnli/validation_matched.jsonl", nli(9, [0, 1, 2]))
    hans = [{"premise": f"hp{i}", "hypothesis": f"hh{i}", "label": i % 2, "heuristic": h}
            for i, h in enumerate(["lexical_overlap", "subsequence", "constituent"] * 4)]
    write(tmp_path / "hans/validation.jsonl", hans)
    write(tmp_path / "glue/cola/train.jsonl", [{"sentence": f"s{i}", "label": i % 2, "idx": i} for i in range(10)])
    write(tmp_path / "glue/cola/validation.jsonl", [{"sentence": f"in{i}", "label": 1, "idx": i} for i in range(3)]
          + [{"sentence": f"out{i}", "label": 0, "idx": 3 + i} for i in range(2)])
    write(tmp_path / "cola_public/in_domain_validation.jsonl", [{"sentence": f"in{i}", "label": 1, "idx": i, "source": "x"} for i in range(3)])
    write(tmp_path / "cola_public/out_of_domain_validation.jsonl", [{"sentence": f"out{i}", "label": 0, "idx": i, "source": "y"} for i in range(2)])
    write(tmp_path / "glue/qqp/train.jsonl", [{"question1": f"q{i}", "question2": f"r{i}", "label": i % 2, "idx": i} for i in range(6)])
    write(tmp_path / "glue/qqp/validation.jsonl", [{"question1": "a", "question2": "b", "label": 1, "idx": 0}])
    write(tmp_path / "paws_qqp/dev_and_test.jsonl", [{"id": 1, "sentence1": "x", "sentence2": "y", "label": 0}])
    rte = lambda n, tag: [{"sentence1": f"{tag}s{i}", "sentence2": f"{tag}t{i}", "label": i % 2, "idx": i} for i in range(n)]
    write(tmp_path / "glue/rte/train.jsonl", rte(8, "tr"))
    write(tmp_path / "glue/rte/validation.jsonl", rte(4, "va"))
    return tmp_path


@pytest.fixture(scope="module")
def cluster():
    """A Ray instance owned by this test module; sweeps reach it with --address. With its dashboard,
    as `ray start` has: Ray Train's placement-group cleaner asks the state API, which lives there."""
    import socket

    import ray
    import sweeps
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        sweeps.METRICS["port"] = s.getsockname()[1]
    ctx = ray.init(num_cpus=2, include_dashboard=True, dashboard_port=port, log_to_driver=False,
                   _metrics_export_port=sweeps.METRICS["port"])
    yield ctx.address_info["gcs_address"]
    ray.shutdown()

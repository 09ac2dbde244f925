"""Shared fixtures: tiny random OPT and Llama models and a synthetic data folder, made once per session."""
import os

import pytest

os.environ.setdefault("FEWSHOT_PROGRESS", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: threads only contend
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("FEWSHOT_DATA_DIR", None)  # tests pass their own data folders

import torch  # noqa: E402

from trainers import synthetic  # noqa: E402

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

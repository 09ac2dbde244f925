"""The commit a record carries, read from .git's files where `git` cannot answer (a node without git,
as `ray up cluster.yaml` may rsync .git to). A job's uploaded folder has no .git at all (Ray leaves it
out): `orchestrator submit` passes the commit itself (tests/test_jobs.py).

    python -m pytest -q tests/test_commit.py
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trainers.records import commit_from_files

REPO = Path(__file__).resolve().parents[1]


def _git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def clone(tmp_path):
    """A fresh clone: its refs are packed (no loose ref file for its branch)."""
    if not shutil.which("git"):
        pytest.skip("needs git")
    origin = tmp_path / "origin"
    (origin / "trainers").mkdir(parents=True)
    (origin / "trainers" / "x.py").write_text("x = 1\n")
    _git("init", "-q", "-b", "main", cwd=origin)
    _git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "one", cwd=origin)
    _git("add", ".", cwd=origin)
    _git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "two", cwd=origin)
    _git("clone", "-q", str(origin), str(tmp_path / "clone"), cwd=tmp_path)
    return tmp_path / "clone", _git("rev-parse", "HEAD", cwd=origin)


def test_a_detached_head_a_loose_ref_and_a_worktree_are_each_read(clone, tmp_path):
    checkout, sha = clone
    assert commit_from_files(checkout / "trainers") == sha  # packed
    _git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "three", cwd=checkout)
    loose = _git("rev-parse", "HEAD", cwd=checkout)
    assert loose != sha and commit_from_files(checkout) == loose
    _git("worktree", "add", "-q", "--detach", str(tmp_path / "wt"), sha, cwd=checkout)
    assert commit_from_files(tmp_path / "wt" / "trainers") == sha
    assert commit_from_files(tmp_path / "nowhere") is None


def test_records_written_without_git_on_the_path_still_carry_the_commit(tmp_path):
    """A node without git (a slim image): the record's commit comes from the files."""
    if not (REPO / ".git").exists():
        pytest.skip("runs from a checkout")
    code = ("import os; os.environ.pop('FEWSHOT_GIT_COMMIT', None); from trainers.records import git_commit; "
            "print(git_commit())")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={"PATH": str(tmp_path), "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == _git("rev-parse", "HEAD", cwd=REPO)

"""Results on shared storage: `--results` may be a pyarrow filesystem URI (s3://, gs://, hdfs://, file://).

    python -m orchestrator sweep --space cd_vs_icl --address auto --results s3://bucket/fewshot-results

No node needs to see another's disk. Ray Tune and Ray Train keep their run state at the URI
(`storage_path`). The driver writes the sweep's files — records, tables, report — into a local
staging folder (`~/.cache/fewshot-sweeps/staging/<hash of the URI>/<name>`, where its lock lives),
uploads each record as it is written and everything else at the end; `--resume` downloads the
sweep's files first. A local `--results` folder is used as it is. Two drivers on different
machines are kept apart only by the URI's own staging lock on each machine: give each sweep its
own --name.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

SKIP = ("ray", "fixtures", ".sweep.lock")  # Ray syncs its own folder; fixtures are rebuilt; the lock is local


def is_uri(results: str) -> bool:
    return "://" in str(results)


class Remote:
    """A sweep's folder at a URI, mirrored from a local staging folder."""

    def __init__(self, results_uri: str, name: str):
        import pyarrow.fs
        try:
            self.fs, root = pyarrow.fs.FileSystem.from_uri(results_uri.rstrip("/"))
        except Exception as e:  # noqa: BLE001 - pyarrow's errors for a bad scheme or missing credentials vary
            raise ValueError(f"--results {results_uri}: {e}") from None
        self.uri, self.root = f"{results_uri.rstrip('/')}/{name}", f"{root}/{name}"
        digest = hashlib.sha256(results_uri.encode()).hexdigest()[:12]
        self.local = Path("~/.cache/fewshot-sweeps/staging").expanduser() / digest / name

    def ray_storage(self) -> str:
        return f"{self.uri}/ray"

    def pull(self) -> int:
        """Download the sweep's files (not Ray's) into the staging folder; returns how many."""
        import pyarrow.fs
        info = self.fs.get_file_info(self.root)
        if info.type == pyarrow.fs.FileType.NotFound:
            return 0
        n = 0
        for f in self.fs.get_file_info(pyarrow.fs.FileSelector(self.root, recursive=True)):
            rel = f.path[len(self.root):].lstrip("/")
            if f.type != pyarrow.fs.FileType.File or rel.split("/")[0] in SKIP:
                continue
            target = self.local / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open_input_stream(f.path) as src:
                target.write_bytes(src.read())
            n += 1
        return n

    def push(self, path: Path) -> None:
        """Upload one file of the staging folder to its place at the URI."""
        rel = Path(path).resolve().relative_to(self.local.resolve()).as_posix()
        self.fs.create_dir(f"{self.root}/{rel}".rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(f"{self.root}/{rel}") as out:
            out.write(Path(path).read_bytes())

    def push_all(self) -> int:
        """Upload every file of the staging folder except Ray's, the fixtures and the lock."""
        n = 0
        for path in sorted(self.local.rglob("*")):
            rel = path.relative_to(self.local).parts
            if path.is_file() and rel[0] not in SKIP:
                self.push(path)
                n += 1
        return n

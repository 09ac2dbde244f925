"""Where a split's rows come from: an ordered list of sources (data in `tasks.yaml`), tried in turn.

    python -m trainers data export --to /shared/fewshot-data     # reads every split through these sources

A source is one of three kinds, all written as data:

- `{hub: ID, config: NAME, split: NAME, revision: REF}`: `datasets.load_dataset` (Parquet repos;
  `revision: refs/convert/parquet` reaches the hub's own conversion of a script data set).
- `{url: URL, format: jsonl|parquet|tsv|csv, ...}`: a file fetched once into `$FEWSHOT_CACHE`
  (default `~/.cache/fewshot-sweeps/data`); `file://` URLs work too.
- `{path: FILE, format: ...}`: a file on this machine.

Every kind may rename columns (`columns: {ours: theirs}`; only those columns are kept), map label
values (`labels: {entailment: 0, ...}`; a TSV's digit labels become ints), read other columns as
integers (`integers: [id]`), unwrap Python bytes literals (`unwrap_bytes: [col]`, for the `b'…'`
cells of PAWS-QQP's TSV) and keep a row range (`rows: [start, stop]`). When every
source fails, the error names each one tried and why. A split's content fingerprint is a hash of
its rows (the columns a task reads), independent of row order, so two runs can be shown to have
seen the same data whichever source delivered it.
"""
from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
import socket
import tempfile
import urllib.request
from pathlib import Path

from trainers import settings

CACHE_ENV = "FEWSHOT_CACHE"
URL_TIMEOUT_S = 30
FORMATS = ("jsonl", "parquet", "tsv", "csv")
KINDS = ("hub", "url", "path")
OPTIONS = {"columns", "labels", "unwrap_bytes", "integers", "rows", "format"}


class SourceError(ValueError):
    """One source could not deliver its rows; the message says which and why."""


def describe(source: dict) -> str:
    if "hub" in source:
        rev = f"@{source['revision']}" if source.get("revision") else ""
        return f"hub {source['hub']}{'/' + source['config'] if source.get('config') else ''}{rev} [{source['split']}]"
    return source.get("url") or source.get("path")


def check(source: dict, where: str) -> None:
    """A source definition names exactly one kind and only known options (checked when tasks load)."""
    kinds = [k for k in KINDS if k in source]
    if len(kinds) != 1:
        raise SourceError(f"{where}: a source names exactly one of {', '.join(KINDS)}; got {sorted(source)}")
    allowed = OPTIONS | ({"config", "split", "revision"} if kinds[0] == "hub" else set()) | {kinds[0]}
    unknown = set(source) - allowed
    if unknown:
        raise SourceError(f"{where}: unknown source option(s) {sorted(unknown)}; valid: {', '.join(sorted(allowed))}")
    if kinds[0] == "hub" and "split" not in source:
        raise SourceError(f"{where}: a hub source needs a split")
    if kinds[0] != "hub" and source.get("format") not in FORMATS:
        raise SourceError(f"{where}: {describe(source)} needs format: one of {', '.join(FORMATS)}")


def read_file(path: str | Path, fmt: str) -> list[dict]:
    """Rows of a local file in one of the known formats."""
    path = Path(path)
    if fmt == "jsonl":
        rows = []
        with open(path, "rb") as f:  # bytes: a line that is not UTF-8 is named with its number
            for n, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise SourceError(f"{path}:{n}: not UTF-8 text (byte {e.start + 1} of the line is "
                                      f"0x{raw[e.start]:02x}); save the file as UTF-8") from None
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise SourceError(f"{path}:{n}: not valid JSON Lines ({e.msg})") from None
        return rows
    if fmt == "parquet":
        import pyarrow.parquet as pq
        return pq.read_table(path).to_pylist()
    try:
        with open(path, encoding="utf-8", newline="") as f:  # tsv and csv: a header line, then one row per line
            if fmt == "csv":
                return list(csv.DictReader(f))
            # QUOTE_NONE: the release files contain bare quotes inside fields (HANS parses, PAWS's b"…")
            return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: not UTF-8 text (byte {e.start} of the file); save it as UTF-8") from None


def cache_dir() -> Path:
    return Path(settings.get(CACHE_ENV) or Path.home() / ".cache" / "fewshot-sweeps" / "data")


def fetch(url: str) -> Path:
    """The file at `url`, downloaded once into the cache (atomically: a broken download leaves nothing)."""
    target = cache_dir() / hashlib.sha256(url.encode()).hexdigest()[:16] / Path(url.split("?")[0]).name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _read_hub(source: dict) -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise SourceError("the `datasets` package is not installed") from None
    ds = datasets.load_dataset(source["hub"], source.get("config"), split=source["split"], revision=source.get("revision"))
    return ds.to_list()


def _unwrap_bytes(value):
    """b'…' / b"…" as Python wrote it → the decoded text; anything else unchanged."""
    if isinstance(value, str) and len(value) >= 3 and value[0] == "b" and value[1] in "'\"" and value[-1] == value[1]:
        return ast.literal_eval(value).decode("utf-8")
    return value


def _int_if_digits(value):
    return int(value) if isinstance(value, str) and value.strip().lstrip("-").isdigit() else value


def transform(rows: list[dict], source: dict) -> list[dict]:
    """Apply a source's row range, column renames, label mapping and bytes unwrapping."""
    if "rows" in source:
        start, stop = source["rows"]
        rows = rows[start:stop]
    columns, labels = source.get("columns"), source.get("labels")
    unwrap, integers = set(source.get("unwrap_bytes") or ()), set(source.get("integers") or ()) | {"label"}
    out = []
    for i, row in enumerate(rows):
        if columns:
            missing = [theirs for theirs in columns.values() if theirs not in row]
            if missing:
                raise SourceError(f"row {i} lacks column(s) {missing}; it has {sorted(row)}")
            row = {ours: row[theirs] for ours, theirs in columns.items()}
        else:
            row = dict(row)
        for col in unwrap & set(row):
            row[col] = _unwrap_bytes(row[col])
        if labels and "label" in row:
            key = row["label"] if row["label"] in labels else str(row["label"])  # 1 in JSON Lines, "1" in a CSV
            if key not in labels:
                raise SourceError(f"row {i}: label {row['label']!r} is not one of {sorted(map(str, labels))}")
            row["label"] = labels[key]
        for col in integers & set(row):
            row[col] = _int_if_digits(row[col])
        out.append(row)
    return out


def read_source(source: dict) -> list[dict]:
    """The rows one source delivers, transformed; raises whatever the source raised."""
    if "hub" in source:
        rows = _read_hub(source)
    elif "url" in source:
        rows = read_file(fetch(source["url"]), source["format"])
    else:
        path = Path(source["path"]).expanduser()
        if not path.is_file():
            raise SourceError(f"{path} not found")
        rows = read_file(path, source["format"])
    return transform(rows, source)


OFFLINE_SET = "HF_HUB_OFFLINE is set"


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the Hugging Face hub cannot be reached (a connection attempt, at most `timeout` seconds), or None."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return OFFLINE_SET
    from urllib.parse import urlparse

    from huggingface_hub import constants
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return None
    except OSError as e:
        return f"{host}: {e.strerror or type(e).__name__}"


def read_first(sources: list[dict], what: str, hint: str) -> tuple[list[dict], str]:
    """(rows, origin) from the first source that works; otherwise one error naming every attempt."""
    tried = []
    for source in sources:
        try:
            return read_source(source), describe(source)
        except Exception as e:  # every source fails in its own way (network, schema, parsing): say each
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            tried.append(f"{describe(source)} ({type(e).__name__}: {first[:200]})")
    attempts = "; ".join(f"{i}) {t}" for i, t in enumerate(tried, 1)) or "no source is defined"
    raise SourceError(f"could not load {what}: tried {attempts}; {hint}")


def fingerprint(rows: list[dict], columns: list[str]) -> str:
    """Order-independent content hash of `rows` over `columns` (duplicates count)."""
    digests = sorted(hashlib.sha256(json.dumps([row.get(c) for c in columns], ensure_ascii=False).encode()).digest()
                     for row in rows)
    h = hashlib.sha256()
    for d in digests:
        h.update(d)
    return "sha256:" + h.hexdigest()[:32]

"""Read rows from a user's file: JSON Lines, JSON, CSV or Parquet, optionally gzipped."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

from anatomy.errors import AnatomyError

FORMATS = ("auto", "jsonl", "json", "csv", "parquet")


def detect_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    ext = suffixes[-1].lstrip(".") if suffixes else ""
    return {"jsonl": "jsonl", "ndjson": "jsonl", "json": "json", "csv": "csv", "parquet": "parquet", "pq": "parquet"}.get(ext, "")


def read_rows(path: str, fmt: str = "auto", option: str = "data.path") -> list[dict]:
    """Every row of the file as a dict; errors name the file (as `option`, the config key that gave
    it) and, for JSON Lines, the line. Text is UTF-8, with or without a byte-order mark; a .json file
    that holds JSON Lines (as `Dataset.to_json` writes) is read as such."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise AnatomyError(f"{option}={path!r}: file does not exist")
    if fmt not in FORMATS:
        raise AnatomyError(f"data.format must be one of {FORMATS}, got {fmt!r}")
    fmt = detect_format(file) if fmt == "auto" else fmt
    if not fmt:
        fix = ("set data.format to one of " + str(FORMATS[1:]) if option == "data.path" else
               "name it .jsonl, .json, .csv or .parquet (optionally .gz)")
        raise AnatomyError(f"{option}={path!r}: cannot tell the format from the name; {fix}")
    try:
        raw = gzip.decompress(file.read_bytes()) if file.suffix.lower() == ".gz" else file.read_bytes()
    except (OSError, EOFError) as err:
        raise AnatomyError(f"{option}={path!r}: cannot read it ({err})") from err
    try:
        if fmt == "parquet":
            import pandas as pd

            return pd.read_parquet(io.BytesIO(raw)).to_dict("records")
        if fmt == "csv":
            import pandas as pd

            return pd.read_csv(io.BytesIO(raw), keep_default_na=False, dtype=str).to_dict("records")
        text = raw.decode("utf-8-sig")  # (a byte-order mark, as Windows tools write, is dropped)
    except AnatomyError:
        raise
    except Exception as err:  # pandas / pyarrow / decoding errors all mean "does not parse"
        raise AnatomyError(f"{option}={path!r}: does not parse as {fmt} ({err.__class__.__name__}: {err})") from err
    if fmt == "json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":  # (one value, then more: JSON Lines under a .json name, read below)
                raise AnatomyError(f"{option}={path!r}: does not parse as JSON ({err})") from err
        else:
            if not isinstance(rows, list):
                raise AnatomyError(f"{option}={path!r}: expected a JSON array of objects (or JSON Lines), "
                                   f"got {type(rows).__name__}")
            return rows
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):  # (not splitlines: JSON strings may hold U+2028, ...)
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise AnatomyError(f"{option}={path!r}: line {number} does not parse as JSON ({err.msg})") from err
    return rows

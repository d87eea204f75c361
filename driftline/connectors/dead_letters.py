"""The dead-letter file of a replay: every input it could not use, one JSON object a line.

Each line holds the file and line, stage, error class, reason and the raw line (capped at
:data:`RAW_CAP` bytes); the fields: docs/events.md, *Validation and bad input*.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from driftline.config import Config
from driftline.connectors.sources import PAYLOAD_CAP
from driftline.events import BadEvent

RAW_CAP = PAYLOAD_CAP
"""Bytes of the raw input kept per bad input (the file sources cut lines there)."""
FOLDER = "dead-letters"
def dead_letter_path(config: Config, base: Path, now: datetime | None = None) -> Path:
    """Where a replay's dead letters go by default: ``dead-letters/replay-<UTC time>-<id>.jsonl`` beside the
    embedded store's folder (``chdb:``), or in ``base`` (the configuration's folder) for a ClickHouse server."""
    dsn = config.store.dsn
    folder = Path(dsn[len("chdb://"):]).parent if dsn.startswith("chdb://") else base
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return folder / FOLDER / f"replay-{stamp}-{uuid.uuid4().hex[:8]}.jsonl"


def dead_letter_record(bad: BadEvent, inputs: frozenset[str] = frozenset()) -> dict[str, Any]:
    """One line of the file: where (the file, and its line/record/row from the origin), why, and the raw
    input. ``inputs``: the files of the run, for an origin that is a whole file (a damaged one)."""
    record: dict[str, Any] = {"file": bad.origin if bad.origin in inputs else None}
    if bad.at is not None and bad.at.source.unit:
        record["file"] = bad.at.source.name
        record[bad.at.source.unit.replace(" ", "_")] = bad.at.offset
    record.update(origin=bad.origin, stage=bad.stage, error=bad.error_class, reason=bad.reason)
    raw = bad.payload
    if raw is None:  # a join or engine refusal: the event was decoded; its line says where it is
        record.update(raw=None, raw_bytes=None, raw_truncated=False)
        return record
    size = bad.payload_size if bad.payload_size is not None else len(raw)
    kept = raw[:RAW_CAP]
    if size <= len(kept):  # the whole line: without its line break
        kept = kept.rstrip(b"\r\n")
        size = len(kept)
    try:
        record["raw"] = kept.decode("utf-8")
    except UnicodeDecodeError as exc:
        if len(kept) < size and exc.reason == "unexpected end of data":  # cut inside a character
            record["raw"] = kept[:exc.start].decode("utf-8")
        else:  # not UTF-8 text: the bytes, in base64
            record.update(raw=None, raw_base64=base64.b64encode(kept).decode("ascii"))
    record.update(raw_bytes=size, raw_truncated=len(kept) < size)
    return record


class DeadLetterFile:
    """Appends bad inputs as JSON lines; the file and its folder are made at the first one."""

    def __init__(self, path: Path, inputs: Iterable[str | Path] = ()) -> None:
        self.path = path
        self.inputs = frozenset(map(str, inputs))
        self.count = 0
        self._out: IO[bytes] | None = None

    def write(self, bad: Iterable[BadEvent]) -> None:
        lines = [orjson.dumps(dead_letter_record(b, self.inputs)) + b"\n" for b in bad]
        if not lines:
            return
        if self._out is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = self.path.open("xb")
        self._out.write(b"".join(lines))
        self.count += len(lines)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    @property
    def written(self) -> Path | None:
        """The file, once something was written to it."""
        return self.path if self.count else None

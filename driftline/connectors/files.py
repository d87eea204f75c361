"""Tabular files (Parquet, CSV) into the columns the engine takes: name → 1-D numpy array.

Numeric columns become float64 with NaN for nulls; string, boolean and dictionary columns become
object arrays with ``None`` for nulls. Every failure is an :class:`InvalidInput` that names the file
and what was wrong with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from numpy.typing import NDArray

from driftline.errors import InvalidInput

Columns = dict[str, NDArray[Any]]
SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".csv.gz": "csv"}


def read_table(path: str | Path) -> pa.Table:
    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"{path}: no such file")
    if path.is_dir():
        raise InvalidInput(f"{path}: is a directory, expected a .parquet or .csv file")
    kind = next((k for suffix, k in SUFFIXES.items() if path.name.lower().endswith(suffix)), None)
    if kind is None:
        raise InvalidInput(f"{path}: unsupported file type; use .parquet or .csv")
    if path.stat().st_size == 0:
        raise InvalidInput(f"{path}: the file is empty")
    try:
        table = pq.read_table(path) if kind == "parquet" else pacsv.read_csv(path)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise InvalidInput(f"{path}: cannot read as {kind}: {exc}") from exc
    if table.num_rows == 0:
        raise InvalidInput(f"{path}: has a header but no rows")
    return table


def read_columns(path: str | Path, categorical: set[str] | frozenset[str] = frozenset()) -> Columns:
    """Read a file into engine columns; names in ``categorical`` are read as labels whatever their type."""
    table = read_table(path)
    columns = {}
    for name in table.column_names:
        try:
            columns[name] = to_numpy(table.column(name), as_labels=name in categorical)
        except InvalidInput as exc:
            raise InvalidInput(f"{path}: {exc.reason}", column=name) from None
    return columns


def to_numpy(column: pa.ChunkedArray, as_labels: bool = False) -> NDArray[Any]:
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = column.type
    if (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)) and not as_labels:
        return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    if pa.types.is_null(kind):
        return np.full(len(column), None, dtype=object)
    if pa.types.is_integer(kind) and as_labels:
        values = column.cast(pa.string())
    elif pa.types.is_boolean(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        values = column.cast(pa.string())
    elif as_labels:
        values = column.cast(pa.string())
    else:
        raise InvalidInput(f"unsupported column type {kind}; expected numbers or strings")
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=object)


def write_parquet(columns: Columns, path: str | Path) -> None:
    """Write engine-shaped columns (float arrays with NaN, object arrays with None) as Parquet."""
    arrays = {name: pa.array(values, from_pandas=True) for name, values in columns.items()}
    pq.write_table(pa.table(arrays), path)

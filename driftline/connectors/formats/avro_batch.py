"""Avro binary of many messages at once, decoded by one compiled loop into columns.

:func:`decode_batch` joins a batch's values into one buffer and runs a loop generated from the schema
and compiled by numba; :func:`text` turns string byte ranges into ``str``. Which schemas qualify:
:mod:`driftline.connectors.formats.avro_plan`. Why and how: docs/events.md, *Avro in batches*.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

from driftline.connectors.formats.avro_plan import Plan, batchable, enum_symbols, field_plans, resolved

__all__ = ["ABSENT", "BOOLEAN", "BYTES", "ENUM", "FLOAT", "INTEGER", "KEY_CAPACITY", "MATRIX_WIDTH", "MAX_KEYS",
           "NULL", "STRING", "Decoded", "Values", "batchable", "decode_batch", "text"]

NULL, BOOLEAN, INTEGER, FLOAT, STRING, BYTES, ENUM = range(7)
"""Value kinds in :class:`Values` (int and long are INTEGER, float and double FLOAT)."""
ABSENT = -1
"""A map column's kind where a message's map lacks the key."""

_KIND = {"null": NULL, "boolean": BOOLEAN, "long": INTEGER, "float": FLOAT, "double": FLOAT,
         "string": STRING, "bytes": BYTES, "enum": ENUM}
KEY_CAPACITY = 64
"""Distinct map keys a batch starts with room for; the loop runs again with 4x the room if needed."""
MAX_KEYS = 16_384
"""Beyond this many distinct map keys in one batch, the batch is decoded one message at a time."""

Int64 = NDArray[np.int64]


@dataclass
class Values:
    """One value per message (or per message and map key), whatever its Avro type: ``kind`` says
    where it is (FLOAT → ``number``; BOOLEAN, INTEGER, ENUM → ``integer``, the index for an enum;
    STRING, BYTES → ``start`` and ``length`` into :attr:`Decoded.buffer`; NULL and ABSENT → nowhere)."""

    kind: NDArray[np.int8]
    number: NDArray[np.float64]
    integer: Int64
    start: Int64
    length: Int64
    symbols: tuple[str, ...] = ()
    """An enum field's symbols."""


@dataclass
class Decoded:
    buffer: NDArray[np.uint8]
    """The messages' bytes back to back: strings are (start, length) into it."""
    fields: dict[str, Values | dict[str, Values]]
    """Per record field: its values, or for a map field its values per key."""
    failed: NDArray[np.bool_]
    """Messages the loop could not decode exactly: decode these one at a time."""


def decode_batch(values: Sequence[bytes], schema: Mapping[str, Any]) -> Decoded | None:
    """Decode raw Avro ``values`` (each one record of ``schema``, no framing) together; None when the
    batch has more distinct map keys than :data:`MAX_KEYS` (decode it one message at a time)."""
    plans = field_plans(schema)
    if any(plan is None for plan in plans):
        raise ValueError(f"schema {schema.get('name')!r} is not batchable (check with batchable() first)")
    loop = _compiled(tuple(plans))  # type: ignore[arg-type]
    n = len(values)
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    buffer = np.frombuffer(b"".join(values), dtype=np.uint8)
    # Per field (and map key), a row of ``n``: read column by column afterwards, so each is contiguous.
    columns = np.empty((3, len(plans), n), dtype=np.int64)  # the integer or the double's bits, start, length
    kinds = np.full((len(plans), n), ABSENT, dtype=np.int8)  # (a field a failed message never reached: no range)
    failed = np.zeros(n, dtype=bool)
    capacity = KEY_CAPACITY
    while True:
        map_kinds = np.full((capacity, n), ABSENT, dtype=np.int8)
        map_columns = np.empty((3, capacity, n), dtype=np.int64)
        keys = np.zeros((capacity, 3), dtype=np.int64)  # field, start, length of the key's first occurrence
        failed[:] = False
        used = loop(buffer, starts, ends, kinds, columns, map_kinds, map_columns, keys, failed)
        if used >= 0:
            break
        if capacity >= MAX_KEYS:
            return None
        capacity *= 4
    fields: dict[str, Values | dict[str, Values]] = {}
    named: dict[str, Any] = {}
    for row, field in enumerate(schema["fields"]):
        symbols = enum_symbols(resolved(field["type"], named))
        if not plans[row][0]:  # type: ignore[index]
            fields[field["name"]] = _values(kinds[row], columns[:, row], symbols)
            continue
        per_key: dict[str, Values] = {}
        for key in np.flatnonzero(keys[:used, 0] == row).tolist():
            present = map_kinds[key] != ABSENT
            if not present[~failed].any():  # only a failed message had it
                continue
            _, start, length = keys[key].tolist()
            try:
                name = buffer[start:start + length].tobytes().decode("utf-8")
            except UnicodeDecodeError:  # fastavro cannot read these messages either: let it say so
                failed |= present
                continue
            per_key[name] = _values(map_kinds[key], map_columns[:, key], symbols)
        fields[field["name"]] = per_key
    return Decoded(buffer, fields, failed)


def _values(kind: NDArray[np.int8], columns: NDArray[np.int64], symbols: tuple[str, ...]) -> Values:
    return Values(kind, columns[0].view(np.float64), columns[0], columns[1], columns[2], symbols)



# -- the compiled loop -----------------------------------------------------------------------------------
#
# The helpers below are called, not inlined by numba (``inline="always"``): numba's own inlining counts a
# reference to every array passed at every call (an atomic increment and a decref call), which made the
# loop 5x slower; LLVM inlines them anyway (docs/decisions.md).


@numba.njit(cache=True, nogil=True)
def _long(buffer: Any, at: int, end: int) -> tuple[int, int, bool]:
    """A zigzag varint: (value, position after it, whether it was whole). int64 arithmetic throughout:
    numba's uint64 scalars are several times slower."""
    raw = 0
    shift = 0
    while at < end and shift < 70:
        byte = np.int64(buffer[at])
        at += 1
        raw |= (byte & 0x7F) << shift
        if byte < 0x80:
            return ((raw >> 1) & 0x7FFFFFFFFFFFFFFF) ^ -(raw & 1), at, True
        shift += 7
    return 0, at, False


@numba.njit(cache=True, nogil=True)
def _word(buffer: Any, at: int) -> int:
    """Four bytes little-endian."""
    return (np.int64(buffer[at]) | (np.int64(buffer[at + 1]) << 8) | (np.int64(buffer[at + 2]) << 16)
            | (np.int64(buffer[at + 3]) << 24))


def _libc_memcmp() -> Any:
    """libc's ``memcmp`` for the compiled loop (numba calls ctypes functions natively), or None."""
    try:
        function = ctypes.CDLL(None).memcmp
    except (OSError, AttributeError, TypeError):  # no C library to ask (not Linux or macOS)
        return None
    function.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
    function.restype = ctypes.c_int
    return function


_memcmp = _libc_memcmp()


if _memcmp is not None:
    _SAME_AS_KNOWN = "_memcmp(base + keys[hint, 1], base + at, length) == 0"
    """The generated loop's test that the key at ``at`` is known key ``hint``: memcmp on the buffer's
    address (10x a byte loop here)."""
else:
    _SAME_AS_KNOWN = "_same(buffer, keys[hint, 1], at, length)"


@numba.njit(cache=True, nogil=True)
def _same(buffer: Any, a: int, b: int, length: int) -> bool:
    """Whether the ``length`` bytes at ``a`` and at ``b`` are equal (where there is no libc memcmp)."""
    for i in range(length):
        if buffer[a + i] != buffer[b + i]:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _intern(buffer: Any, at: int, length: int, field: int, keys: Any, used: int) -> int:
    """The id of the map key at (at, length): a known key's, else a new one (``used``, recorded in
    ``keys``); -1 when ``keys`` is full. (The loop calls it when the key is not the one the previous
    message had at this place.)"""
    for k in range(used):
        if keys[k, 0] == field and keys[k, 2] == length and _same(buffer, keys[k, 1], at, length):
            return k
    if used == keys.shape[0]:
        return -1
    keys[used, 0], keys[used, 1], keys[used, 2] = field, at, length
    return used


_compiled_loops: dict[tuple[Plan, ...], Any] = {}


def _compiled(plans: tuple[Plan, ...]) -> Any:
    loop = _compiled_loops.get(plans)
    if loop is None:
        source = _loop_source(plans)
        namespace: dict[str, Any] = {"np": np, "_long": _long, "_word": _word, "_intern": _intern,
                                     "_same": _same, "_memcmp": _memcmp}
        exec(compile(source, f"<avro batch loop {len(_compiled_loops)}>", "exec"), namespace)  # noqa: S102 (our own source)
        loop = _compiled_loops[plans] = numba.njit(nogil=True)(namespace["loop"])
    return loop


def _loop_source(plans: tuple[Plan, ...]) -> str:
    """Python source of the loop over messages for one schema (fields and branches written out)."""
    lines = [
        "def loop(buffer, starts, ends, kinds, columns, map_kinds, map_columns, keys, failed):",
        "    used = 0",
        "    guess = np.zeros(keys.shape[0], dtype=np.int64)",
        "    single, double = np.zeros(1, dtype=np.uint32), np.zeros(1, dtype=np.float64)",
        "    base = buffer.ctypes.data",
        "    for message in range(starts.shape[0]):",
        "        at, end, whole = starts[message], ends[message], True",
        "        while True:  # once; a failed read breaks out",
    ]
    for field, (is_map, is_union, wires) in enumerate(plans):
        if not is_map:
            lines += _value_source(is_union, wires, f"kinds[{field}, message]", f"columns[{{}}, {field}, message]", 12)
            lines += ["            if not whole:", "                break"]
            continue
        lines += [
            "            entry = 0",
            "            while whole:  # blocks: a count (negative: then a byte size), entries; 0 ends the map",
            "                count, at, whole = _long(buffer, at, end)",
            "                if not whole or count == 0:",
            "                    break",
            "                if count < 0:",
            "                    count = -count",
            "                    _, at, whole = _long(buffer, at, end)",
            "                if count > end - at:",
            "                    whole = False",
            "                    break",
            "                for _ in range(count):",
            "                    length, at, whole = _long(buffer, at, end)",
            "                    if not whole or length < 0 or length > end - at:",
            "                        whole = False",
            "                        break",
            "                    hint = guess[entry] if entry < guess.shape[0] else 0",
            f"                    if (hint < used and keys[hint, 0] == {field} and keys[hint, 2] == length",
            f"                            and {_SAME_AS_KNOWN}):",
            "                        key = hint  # the common case, tested here: a call costs more than the test",
            "                    else:",
            f"                        key = _intern(buffer, at, length, {field}, keys, used)",
            "                    if key < 0:",
            "                        return -1",
            "                    if key == used:",
            "                        used += 1",
            "                    if entry < guess.shape[0]:",
            "                        guess[entry] = key",
            "                    entry += 1",
            "                    at += length",
        ]
        lines += _value_source(is_union, wires, "map_kinds[key, message]", "map_columns[{}, key, message]", 20)
        lines += ["            if not whole:", "                break"]
    lines += [
        "            break",
        "        if not whole or at != end:",
        "            failed[message] = True",
        "            for k in range(used):",
        "                map_kinds[k, message] = -1",
        "    return used",
    ]
    return "\n".join(lines) + "\n"


def _value_source(is_union: bool, wires: tuple[tuple[str, int], ...], kind: str, column: str, indent: int) -> list[str]:
    """Reading one value into ``kind`` and ``column`` (a template: its ``{}`` is 0 for the number, 1 and 2 for
    a string's start and length); a failure sets ``whole`` False and breaks."""
    pad = " " * indent
    fail = [f"{pad}    whole = False", f"{pad}    break"]
    if not is_union:
        return _branch_source(wires[0], kind, column, indent)
    lines = [f"{pad}branch, at, whole = _long(buffer, at, end)", f"{pad}if not whole:", f"{pad}    break"]
    for index, wire in enumerate(wires):
        lines.append(f"{pad}{'if' if index == 0 else 'elif'} branch == {index}:")
        lines += _branch_source(wire, kind, column, indent + 4)
    lines.append(f"{pad}else:")
    return lines + fail


def _branch_source(wire: tuple[str, int], kind: str, column: str, indent: int) -> list[str]:
    pad = " " * indent
    name, size = wire
    code = [f"{kind} = {_KIND[name]}"]
    if name == "boolean":
        code = ["if at >= end or buffer[at] > 1:", "    whole = False", "    break",
                *code, f"{column.format(0)} = buffer[at]", "at += 1"]
    elif name in ("long", "enum"):
        check = "not whole" if name == "long" else f"not whole or value < 0 or value >= {size}"
        code = ["value, at, whole = _long(buffer, at, end)", f"if {check}:", "    whole = False", "    break",
                *code, f"{column.format(0)} = value"]
    elif name == "double":
        code = ["if at + 8 > end:", "    whole = False", "    break",
                *code, f"{column.format(0)} = _word(buffer, at) | (_word(buffer, at + 4) << 32)", "at += 8"]
    elif name == "float":
        code = ["if at + 4 > end:", "    whole = False", "    break", "single[0] = _word(buffer, at)",
                "double[0] = np.float64(single.view(np.float32)[0])",
                *code, f"{column.format(0)} = double.view(np.int64)[0]", "at += 4"]
    elif name in ("string", "bytes"):
        code = ["length, at, whole = _long(buffer, at, end)",
                "if not whole or length < 0 or length > end - at:", "    whole = False", "    break",
                *code, f"{column.format(1)} = at", f"{column.format(2)} = length", "at += length"]
    return [pad + line for line in code]


# -- from byte ranges to strings ------------------------------------------------------------------------

MATRIX_WIDTH = 64
"""Strings up to this many bytes are converted together through a byte matrix; longer ones one by one."""


def text(buffer: NDArray[np.uint8], start: Int64, length: Int64,
         nul_invalid: bool = False) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """UTF-8 strings at (start, length) as an array of ``str``, and a mask of the invalid ones (not
    UTF-8; with ``nul_invalid``, also any holding a NUL character). Short ASCII strings are copied
    straight into a numpy string array; non-ASCII ones are decoded once per distinct value; long ones,
    or ones ending in a NUL byte (which numpy's fixed-width strings drop), one at a time."""
    n = len(start)
    width = int(length.max()) if n else 0
    if width <= MATRIX_WIDTH:
        codes = np.zeros((n, max(width, 1)), dtype=np.uint32)
        flags = np.zeros(n, dtype=np.uint8)
        _fill(buffer, start, length, codes, flags)
        if not (flags & TRAILING_NUL).any():
            bad = (flags & HAS_NUL).astype(bool) if nul_invalid else np.zeros(n, dtype=bool)
            if not (flags & NOT_ASCII).any():  # one code point per byte
                return codes.view(f"<U{max(width, 1)}").ravel(), bad
            return _decode_distinct(codes.astype(np.uint8).view(f"S{max(width, 1)}").ravel(), bad)
    out = np.empty(n, dtype=object)
    invalid = np.zeros(n, dtype=bool)
    for row, (at, size) in enumerate(zip(start.tolist(), length.tolist(), strict=True)):
        try:
            out[row] = buffer[at:at + size].tobytes().decode("utf-8")
        except UnicodeDecodeError:
            out[row] = ""
            invalid[row] = True
        else:
            invalid[row] = nul_invalid and "\x00" in out[row]
    return out, invalid


HAS_NUL, TRAILING_NUL, NOT_ASCII = 1, 2, 4


def _decode_distinct(raw: NDArray[np.bytes_], bad: NDArray[np.bool_]) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """Byte strings that are not all ASCII: each distinct value decoded once."""
    distinct, inverse = np.unique(raw, return_inverse=True)
    decoded = np.empty(len(distinct), dtype=object)
    invalid = np.zeros(len(distinct), dtype=bool)
    for row, value in enumerate(distinct.tolist()):
        try:
            decoded[row] = value.decode("utf-8")
        except UnicodeDecodeError:
            decoded[row], invalid[row] = "", True
    return decoded[inverse], invalid[inverse] | bad


@numba.njit(cache=True, nogil=True)
def _fill(buffer: Any, start: Any, length: Any, codes: Any, flags: Any) -> None:
    """Each string's bytes into its row of ``codes`` (one per position), and per string: whether it
    holds a NUL byte, ends in one, or has a byte past ASCII."""
    for row in range(start.shape[0]):
        at, size = start[row], length[row]
        flag = 0
        for i in range(size):
            byte = buffer[at + i]
            codes[row, i] = byte
            if byte == 0:
                flag |= 1
            elif byte >= 128:
                flag |= 4
        if size > 0 and buffer[at + size - 1] == 0:
            flag |= 2
        flags[row] = flag

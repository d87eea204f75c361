"""librdkafka's log lines, rate-limited: the first line of a kind at once, then one line per
``LOG_REPEAT_INTERVAL_S`` with the count of those that came meanwhile.

:class:`RepeatLimiter` is the pure part; :class:`LibrdkafkaLog` is every client's ``logger``
(docs/service.md, *librdkafka's log*).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from driftline import __version__
from driftline.config import KafkaConfig

LOG_REPEAT_INTERVAL_S = 10.0
"""How often a line that keeps coming is logged again, with the count since the last time."""
_NUMBERS = re.compile(r"\d+")


@dataclass
class _Stretch:
    started: float
    repeats: int
    """Lines of this kind since ``started`` that were not logged."""
    last: str


class RepeatLimiter:
    """Which lines to log now: the first of each kind, then at most one per ``interval_s`` per kind,
    saying how many came (that one included) since the last line of its kind was logged. Counts still
    pending when an interval ends are logged with the next line of any kind (:meth:`offer`) or by
    :meth:`flush`; nothing is lost from the count."""

    def __init__(self, interval_s: float = LOG_REPEAT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._stretches: dict[Any, _Stretch] = {}

    def offer(self, kind: Any, line: str) -> list[str]:
        """The lines to log now that ``line`` (of ``kind``) came."""
        now = self.clock()
        out = self._due(now, skip=kind)
        stretch = self._stretches.get(kind)
        if stretch is None:
            self._stretches[kind] = _Stretch(now, 0, line)
            out.append(line)
        elif now - stretch.started >= self.interval_s:
            out.append(_summary(line, stretch.repeats + 1, now - stretch.started))
            self._stretches[kind] = _Stretch(now, 0, line)
        else:
            stretch.repeats += 1
            stretch.last = line
        return out

    def flush(self) -> list[str]:
        """Every pending count, as of now (and the limiter starts afresh)."""
        now = self.clock()
        out = [_summary(s.last, s.repeats, now - s.started) for s in self._stretches.values() if s.repeats]
        self._stretches.clear()
        return out

    def _due(self, now: float, skip: Any) -> list[str]:
        """Summaries of the other kinds whose interval has ended; those kinds are forgotten (a line of one
        of them later is logged at once again)."""
        out = []
        for kind in [k for k, s in self._stretches.items() if k != skip and now - s.started >= self.interval_s]:
            stretch = self._stretches.pop(kind)
            if stretch.repeats:
                out.append(_summary(stretch.last, stretch.repeats, now - stretch.started))
        return out


def _summary(line: str, count: int, seconds: float) -> str:
    return f"{line} [{count} such lines in the last {seconds:.0f} s]"


class LibrdkafkaLog:
    """A ``logger`` for confluent-kafka clients: librdkafka's lines to ``driftline.kafka.librdkafka``,
    rate-limited by kind (:class:`RepeatLimiter`)."""

    def __init__(self, logger: logging.Logger | None = None, limiter: RepeatLimiter | None = None) -> None:
        self.logger = logger if logger is not None else logging.getLogger("driftline.kafka.librdkafka")
        self.limiter = limiter if limiter is not None else RepeatLimiter()
        self.offered = 0
        """Lines librdkafka sent."""

    def log(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        self.offered += 1
        line = msg % args if args else msg
        facility = str(args[0]) if args else ""
        text = str(args[2]) if len(args) > 2 else line
        for out in self.limiter.offer((level, facility, _NUMBERS.sub("#", text)), line):
            self.logger.log(level, "%s", out)

    def flush(self) -> None:
        for out in self.limiter.flush():
            self.logger.log(logging.WARNING, "%s", out)


def client_settings(config: KafkaConfig) -> dict[str, Any]:
    """Every Kafka client's settings (consumer, producer, admin): librdkafka's log lines rate-limited."""
    return {"bootstrap.servers": config.bootstrap_servers, "client.id": f"driftline-{__version__}",
            "logger": LibrdkafkaLog(), **config.client}

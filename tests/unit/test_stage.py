"""The two-stage service's stages without a broker: stage 1 over mixed batches equals each partition fed
alone, partials records survive their wire format, and stage 2 fed every record twice (a partition read
again after a crash or a handover) writes what it writes fed each once — late counts included."""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

import numpy as np
import pytest

from driftline.config import Config, ConfigError, load_config
from driftline.engine.partials import PartitionPanes
from driftline.engine.profile import ReferenceProfile, build_profile
from driftline.engine.window_spec import WindowSpec
from driftline.events import EventBuilder, Events, Source
from driftline.grouping import typed_columns
from driftline.merge import MergeShard
from driftline.outcome import StepResult, Totals
from driftline.registry import KnownProfiles, ModelRegistry
from driftline.sinks import StoreSink
from driftline.stage import PartialRecord, StageOne

T0 = 1_767_225_600_000
MINUTE = 60_000
SPEC = WindowSpec(size_ms=MINUTE, allowed_lateness_ms=10_000)
KEY = ("credit", "3")


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    rng = np.random.default_rng(1)
    return build_profile({"income": rng.lognormal(10, 1, 3000), "channel": rng.choice(["web", "app"], 3000),
                          "score": rng.random(3000)}, model="credit", model_version="3", categorical=["channel"],
                         score_column="score")


def events(seed: int, n: int, partitions: int, extra: tuple[dict[str, Any], ...] = ()) -> Events:
    """``n`` credit events over four minutes, out of order by up to 30 s, spread over the partitions."""
    rng = np.random.default_rng(seed)
    times = T0 + np.sort(rng.integers(0, 4 * MINUTE, n)) + rng.integers(-30_000, 30_000, n)
    builder = EventBuilder(Source("s"))
    sources = []
    for i in range(n):
        builder.add({"request_id": f"r{i}", "model": "credit", "model_version": "3", "event_time": int(times[i]),
                        "features": {"income": float(rng.lognormal(10, 1)), "channel": str(rng.choice(["web", "app"]))},
                        "score": float(rng.random())}, (0, i % partitions, i, -1))
        sources.append(f"s[{i % partitions}]")
    for j, record in enumerate(extra):
        builder.add(record, (0, 0, n + j, -1))
        sources.append("s[0]")
    built = builder.build()
    built.source = np.asarray(sources, dtype=object)
    return built


def registry(profile: ReferenceProfile, max_future: int | None = None, **join: int) -> ModelRegistry:
    """The registry of one model version, ``credit`` 3, with :data:`SPEC`'s windows."""
    config = Config.model_validate({
        "windows": {"size": MINUTE, "allowed_lateness": SPEC.allowed_lateness_ms, "max_future": max_future},
        "join": join, "models": [{"name": "credit", "references": {"3": "(in memory)"}}]})
    return ModelRegistry(config, KnownProfiles({KEY: profile}))


def stage_one(profile: ReferenceProfile, max_future: int | None = None, partitions: int = 1, **join: int) -> StageOne:
    return StageOne(registry(profile, max_future, **join), partitions)


def records(stage: StageOne, batch: Events, size: int) -> list[PartialRecord]:
    out: list[PartialRecord] = []
    for lo in range(0, len(batch), size):
        out += stage.count(batch.take(np.arange(lo, min(lo + size, len(batch)))), None).records
    return out


def test_a_mixed_batch_counts_as_each_partition_fed_alone(profile: ReferenceProfile) -> None:
    batch = events(1, 1200, partitions=3)
    got = records(stage_one(profile), batch, 1200)
    for p, record in enumerate(sorted(got, key=lambda r: r.partition)):
        rows = np.flatnonzero(batch.source == f"s[{p}]")
        alone = PartitionPanes(stage_one(profile).features[KEY], SPEC)
        columns, _ = typed_columns(profile, batch.take(rows))
        update = alone.update(batch.event_time[rows], columns)
        assert (record.partition, record.mark, record.panes) == (f"s[{p}]", update.mark, update.partials)
        assert record.late == update.late and sum(update.late.values()) > 0


def test_a_partials_record_survives_its_wire_format(profile: ReferenceProfile) -> None:
    for record in records(stage_one(profile), events(2, 900, partitions=2), 100):
        again = PartialRecord.decode(record.encode())
        assert again == record and all(p.counts.dtype == np.int64 for p in again.panes)
        assert record.key == b"credit|3"


def test_halves_unknown_models_and_future_events_are_refused(profile: ReferenceProfile) -> None:
    extra = ({"request_id": "q", "model": "credit", "model_version": "3", "event_time": T0, "features": {}},
             {"request_id": "u", "model": "other", "model_version": "1", "event_time": T0, "features": {},
              "score": 0.5},
             {"request_id": "f", "model": "credit", "model_version": "3", "event_time": T0 + 10 * MINUTE,
              "features": {}, "score": 0.5})
    result = stage_one(profile, MINUTE).count(events(3, 10, 1, extra), now_ms=T0 + 4 * MINUTE)
    assert sorted(b.error_class for b in result.bad) == ["FutureEvent", "UnknownModel", "Unsupported"]
    assert result.accepted + result.late == 10


def test_a_request_id_repeated_in_its_partition_is_dropped_and_reported(profile: ReferenceProfile) -> None:
    batch = events(5, 600, partitions=3)
    rows = np.arange(len(batch))
    retried = rows[::7]  # producer retries: the same message again later in its partition
    again = batch.take(np.concatenate((rows, retried)))
    again.source = np.concatenate((batch.source, batch.source[retried]))
    retries = batch.position[retried].copy()
    retries["offset"] += len(batch)  # (the same message produced again, later in its partition)
    again.position = np.concatenate((batch.position, retries))
    expected = records(stage_one(profile), batch, 97)
    stage = stage_one(profile)
    results = [stage.count(again.take(np.arange(lo, min(lo + 97, len(again)))), None)
               for lo in range(0, len(again), 97)]
    assert sum(r.duplicates for r in results) == len(retried)
    reported = [b for r in results for b in r.bad]
    assert {b.error_class for b in reported} == {"Duplicate"} and all(b.at is not None and b.at.offset >= len(batch) for b in reported)
    by_partition = _merged(r for result in results for r in result.records)
    assert by_partition == _merged(expected)


def test_duplicates_are_recognised_after_a_checkpoint_not_across_partitions(profile: ReferenceProfile) -> None:
    batch = events(6, 300, partitions=2)
    first = stage_one(profile)
    first.count(batch, None)
    moved = stage_one(profile)  # the partition handed to another member with its checkpoint
    moved.restore("s[0]", json.loads(json.dumps(first.snapshot("s[0]"))))
    repeat = batch.take(np.flatnonzero(batch.source == "s[0]")[:5])
    assert moved.count(repeat, None).duplicates == 5
    elsewhere = dataclasses.replace(repeat, source=np.full(len(repeat), "s[1]", dtype=object))
    assert first.count(elsewhere, None).duplicates == 0  # another partition: its own order, counted


def _merged(records: Any) -> dict[str, tuple[Any, list[tuple[int, list[int]]]]]:
    """Per partition: its last mark and every final pane's counts (how a batching is compared to another)."""
    out: dict[str, tuple[Any, list[tuple[int, list[int]]]]] = {}
    for record in records:
        mark, panes = out.get(record.partition, (None, []))
        out[record.partition] = (record.mark if record.mark is not None else mark,
                                 panes + [(p.pane, p.counts.tolist()) for p in record.panes])
    return out


class Recorder:
    """A store that remembers what it was asked to write."""

    def __init__(self) -> None:
        self.late: dict[str, int] = {}
        self.windows: list[tuple[str, list[int]]] = []

    def write_late(self, model: str, version: str, late: list[Any]) -> None:
        for count in late:
            self.late[count.window_id] = max(count.count, self.late.get(count.window_id, 0))

    def write_windows(self, features: Any, reports: list[Any]) -> None:
        self.windows += [(r.window.window_id, r.window.counts.tolist()) for r in reports]

    def write_alerts(self, *_: Any) -> None: ...
    def write_rollbacks(self, *_: Any) -> None: ...
    def write_detections(self, *_: Any) -> None: ...
    def audit(self, *_: Any) -> None: ...


def test_stage_two_fed_every_record_again_writes_the_same(profile: ReferenceProfile) -> None:
    sent = records(stage_one(profile), events(4, 3000, partitions=3), 97)
    expected = frozenset({"s[0]", "s[1]", "s[2]"})
    once, again = Recorder(), Recorder()
    for store, stream in ((once, sent), (again, redelivered(sent, random.Random(4)))):
        shard = MergeShard(registry(profile), expected)
        for record in stream:
            step = StepResult()
            shard.add(PartialRecord.decode(record.encode()), step)
            shard.decide(step, Totals())
            StoreSink(store).write(step)  # type: ignore[arg-type]
    assert once.windows and again.windows == once.windows
    assert once.late and again.late == once.late


def redelivered(sent: list[PartialRecord], rng: random.Random) -> list[PartialRecord]:
    """Each partition's records in order, some of them followed by its earlier records again (the partition
    re-read from an older checkpoint), the partitions interleaved."""
    out: list[PartialRecord] = []
    for i, record in enumerate(sent):
        out.append(record)
        if rng.random() < 0.3:
            earlier = [r for r in sent[:i] if r.partition == record.partition]
            out += earlier[-rng.randint(1, 4):]
    return out


def test_two_stages_refuse_topics_of_request_and_response_halves(tmp_path: Any) -> None:
    path = tmp_path / "driftline.yaml"
    path.write_text('{"kafka": {"stages": "two", "topics": [{"topic": "a"}, {"topic": "m.inputs", '
                    '"format": "oip-protobuf"}]}}')
    with pytest.raises(ConfigError, match="m.inputs carry requests or responses to join"):
        load_config(path, environ={})
    path.write_text('{"kafka": {"stages": "two", "topics": [{"topic": "a"}]}}')
    assert load_config(path, environ={}, require_models=False).kafka.stages == "two"


def test_the_ids_remembered_are_shared_out_over_the_partitions(profile: ReferenceProfile) -> None:
    stage = stage_one(profile, partitions=4, max_pending=1_000)
    assert stage.ids_per_partition == 250 and stage._recent("s[0]").max_pending == 250
    assert stage_one(profile, partitions=8, max_pending=3).ids_per_partition == 1

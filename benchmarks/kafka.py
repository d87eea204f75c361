"""Kafka throughput: driftline's service end to end against raw consume and per-message Avro decode.

One real Kafka 4 broker (``tests/kafka_broker.py``), one 3-partition topic holding N seeded scoring
events (24 numeric + 6 categorical features, score, decision; :mod:`benchmarks.data`) as driftline's
raw Avro (``scoring_event.avsc``), event times spread over a few 1-minute windows. The cases, each
read from the start with a new consumer group per repeat:

1. raw consume: ``Consumer.consume(5000, 1.0)`` in a loop, counting messages;
2. fastavro decode: the same loop plus ``fastavro.schemaless_reader`` per message;
3. driftline: :class:`driftline.streaming.loop.ConsumerLoop` with a real ``KafkaSource``/``Publisher`` and a chDB
   store in a temp dir, stepped until every message is consumed (decode, windows, store), then a
   checkpoint and commit;
4. driftline in two stages (``kafka.stages: two``, :class:`driftline.streaming.two_stage.TwoStageHandler`): the
   same, until every partials record is merged too;
5. driftline without the broker: the service's own work on the same messages handed over as already
   consumed batches (on this 2-vCPU machine the broker and librdkafka's threads compete with it);
6. on one core (where the machine has two or more): raw consume and case 3 again with this process,
   librdkafka's threads included, held to one CPU and the broker's threads to the others.

Each Kafka case is timed from the consume call that returns the first messages (group join excluded)
to the end of its work; the harness's own data is frozen out of the garbage collector first, and
the service's collector is settled as ``driftline run`` does. Then the latency from a window's close to
its alert on the control topic, on live paced traffic (p50/p99). The issue's targets: >= 200k events/s
end to end on one core, alerts <= 1 s after a window closes (p99). Results go to
``benchmarks/results/kafka.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
from confluent_kafka import Consumer, Producer

from benchmarks.data import CATEGORICAL, DECISION, NUMERIC, SCORE, generate
from driftline.app.replay import open_store
from driftline.app.run import consumer_loop
from driftline.app.run import consumer_loop
from driftline.app.runtime import settle_process
from driftline.config import Config
from driftline.connectors.formats.avro_batch import decode_batch
from driftline.connectors.kafka.publish import Publisher
from driftline.connectors.kafka.source import KafkaSource
from driftline.connectors.messages import MessageBatch
from driftline.connectors.profiles import save_profile
from driftline.engine.profile import build_profile
from driftline.streaming.two_stage import merge_settings
from tests.kafka_broker import KafkaBroker, create_topic

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "kafka.json"
TOPIC, PARTITIONS, MINUTES = "bench.scoring", 3, 4
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MODEL, VERSION = "credit", "1"
TARGET = 200_000
KEEP = {"retention.ms": "-1"}
"""The scoring topic keeps its messages: their timestamps are the events' (2026-01-01), and the broker's
retention check (every 5 minutes) would otherwise delete them mid-run as older than 7 days."""
SCHEMA = fastavro.parse_schema(json.loads((REPO / "driftline" / "schemas" / "scoring_event.avsc").read_text()))


def encode(events: int, seed: int) -> list[tuple[int, bytes]]:
    """(event time ms, raw Avro) for ``events`` scoring events spread evenly over ``MINUTES`` minutes."""
    cols = generate(events, seed=seed)
    numeric = {n: cols[n].tolist() for n in NUMERIC}
    categorical = {n: cols[n].tolist() for n in CATEGORICAL}
    scores, decisions = cols[SCORE].tolist(), cols[DECISION].tolist()
    step = MINUTES * 60_000 / events
    out = []
    for i in range(events):
        features: dict[str, Any] = {n: None if math.isnan(v[i]) else v[i] for n, v in numeric.items()}
        features.update({n: v[i] for n, v in categorical.items()})
        stamp = T0 + int(i * step)
        record = {"request_id": f"r{i:09d}", "model": MODEL, "model_version": VERSION, "event_time": stamp,
                  "features": features, "score": scores[i], "decision": decisions[i]}
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, SCHEMA, record)
        out.append((stamp, buffer.getvalue()))
    return out


def produce(bootstrap: str, payloads: list[tuple[int, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000,
                         "queue.buffering.max.messages": 1_000_000, "compression.type": "none"})
    for i, (stamp, value) in enumerate(payloads):
        producer.produce(TOPIC, value, partition=i % PARTITIONS, timestamp=stamp)
        if i % 50_000 == 0:
            producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("messages left unacknowledged after 60 s")


def consume_loop(bootstrap: str, group: str, total: int, per_message: Callable[[bytes | None], object] | None) -> float:
    """Seconds from the first non-empty consume to the ``total``-th message."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([TOPIC])
    seen, start = 0, None
    try:
        while seen < total:
            began = time.perf_counter()
            batch = consumer.consume(5000, 1.0)
            if batch and start is None:
                start = began
            for message in batch:
                if message.error() is None:
                    seen += 1
                    if per_message is not None:
                        per_message(message.value())
        return time.perf_counter() - (start or 0.0)
    finally:
        consumer.close()


def decode(value: bytes | None) -> object:
    return fastavro.schemaless_reader(io.BytesIO(value or b""), SCHEMA)


def config(workdir: Path, bootstrap: str, group: str, profile_path: Path) -> Config:
    return Config.model_validate({
        "store": {"dsn": f"chdb://{workdir / 'store'}"},
        "windows": {"size": "1m", "allowed_lateness": 0, "max_future": None},
        "models": [{"name": MODEL, "references": {VERSION: str(profile_path)}, "policy": {"min_samples": 50}}],
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group, "poll_timeout": 50,
                  "topics": [{"topic": TOPIC, "format": "avro"}]},
    })


def driftline_run(bootstrap: str, group: str, total: int, profile_path: Path,
                  stages: str = "single") -> tuple[float, int]:
    """(seconds, dead letters) for the service to consume all ``total`` messages (with ``kafka.stages``)."""
    with tempfile.TemporaryDirectory(prefix="driftline-kafka-bench-") as tmp:
        cfg = config(Path(tmp), bootstrap, group, profile_path)
        partials = f"{group}.partials"  # a topic of its own per run: stage 2 reads it from the start
        cfg = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"stages": stages,
                                                                           "partials_topic": partials})})
        if stages == "two":
            create_topic(bootstrap, partials, 1)
        store = open_store(cfg)
        source = KafkaSource(cfg.kafka)
        merge_source = KafkaSource(merge_settings(cfg.kafka)) if stages == "two" else None
        try:
            service = consumer_loop(cfg, store, source, Publisher(cfg.kafka), merge_source=merge_source)
            settle_process()  # as `driftline run` does after start-up
            dead, start = 0, None
            while sum(service.offsets.values()) < total:  # every scoring message consumed
                began = time.perf_counter()
                report = service.step()
                if report.messages and start is None:
                    start = began
                dead += report.dead_letters
            while merge_source is not None:  # and, in two stages, every partials record merged
                report = service.step()
                dead += report.dead_letters
                if not report.messages:
                    break
            service.checkpoint()  # as a stop would: everything consumed is checkpointed and committed
            return time.perf_counter() - (start or 0.0), dead
        finally:
            source.close()
            if merge_source is not None:
                merge_source.close()
            store.close()


def driftline_without_broker(bootstrap: str, payloads: list[tuple[int, bytes]], profile_path: Path) -> float:
    """Seconds for the service's own work on the same messages, handed over already consumed (the
    batches a consume call would give): decode, windows, store, checkpoint. On this 2-vCPU machine the
    broker and librdkafka's threads compete with the service for the CPU in the end-to-end case."""
    with tempfile.TemporaryDirectory(prefix="driftline-kafka-offline-") as tmp:
        cfg = config(Path(tmp), bootstrap, "offline", profile_path)
        store = open_store(cfg)
        source = KafkaSource(cfg.kafka)
        try:
            service = consumer_loop(cfg, store, source, Publisher(cfg.kafka))
            size = cfg.kafka.batch_size
            batches = []
            for first in range(0, len(payloads), size):
                chunk = payloads[first:first + size]
                offsets = list(range(first // PARTITIONS, first // PARTITIONS + len(chunk)))
                sources = [f"{TOPIC}[{(first + i) % PARTITIONS}]" for i in range(len(chunk))]
                batches.append(MessageBatch([None] * len(chunk), [v for _, v in chunk], [TOPIC] * len(chunk),
                                            sources, offsets, [(first + i) % PARTITIONS for i in range(len(chunk))]))
            settle_process()
            began = time.perf_counter()
            for batch in batches:
                service.handle(batch, time.time())
            service.checkpoint()
            return time.perf_counter() - began
        finally:
            source.close()
            store.close()


@contextlib.contextmanager
def one_core(broker_pid: int | None) -> Iterator[bool]:
    """This process (every thread, and the threads it starts) on its first CPU, the broker's threads on
    the others, for the block; whether that could be done (two CPUs or more, a running broker). Every
    thread gets back the CPUs it had."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or broker_pid is None:
        yield False
        return
    before = {**_affinities(broker_pid), **_affinities(os.getpid())}
    try:
        _pin(broker_pid, set(cpus[1:]))
        _pin(os.getpid(), {cpus[0]})
        yield True
    finally:
        for thread, allowed in before.items():
            with contextlib.suppress(OSError):  # a thread that has ended since
                os.sched_setaffinity(thread, allowed)


def _affinities(pid: int) -> dict[int, set[int]]:
    out = {}
    for thread in _threads(pid):
        with contextlib.suppress(OSError):
            out[thread] = os.sched_getaffinity(thread)
    return out


def _pin(pid: int, cpus: set[int]) -> None:
    for thread in _threads(pid):
        with contextlib.suppress(OSError):  # a thread that has just ended
            os.sched_setaffinity(thread, cpus)


def _threads(pid: int) -> list[int]:
    try:
        return [int(thread) for thread in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:  # the process has ended
        return []


def rates(seconds: list[float], events: int) -> dict[str, Any]:
    return {"median_s": statistics.median(seconds), "runs_s": seconds,
            "events_per_s": events / statistics.median(seconds)}


# -- window close → alert on the control topic ------------------------------------------------------------

LIVE_TOPIC, CONTROL_TOPIC = "bench.live", "bench.control"
ALERT_SCHEMA = fastavro.parse_schema(json.loads((REPO / "driftline" / "schemas" / "control_alert.avsc").read_text()))
LATENCY_TARGET_S = 1.0


def live_payloads(windows: int, per_window: int, seed: int) -> list[list[bytes]]:
    """``windows + 1`` one-minute windows of raw Avro events; every odd window drifted (its alerts fire, the
    next window's resolve them), the last one only closes the one before."""
    out = []
    for w in range(windows + 1):
        cols = generate(per_window, seed=seed + w, drifted=w % 2 == 1)
        numeric = {n: cols[n].tolist() for n in NUMERIC}
        categorical = {n: cols[n].tolist() for n in CATEGORICAL}
        scores, decisions = cols[SCORE].tolist(), cols[DECISION].tolist()
        batch = []
        for i in range(per_window):
            features: dict[str, Any] = {n: None if math.isnan(v[i]) else v[i] for n, v in numeric.items()}
            features.update({n: v[i] for n, v in categorical.items()})
            record = {"request_id": f"w{w}-{i}", "model": MODEL, "model_version": VERSION,
                      "event_time": T0 + w * 60_000 + i * 60_000 // per_window, "features": features,
                      "score": scores[i], "decision": decisions[i]}
            buffer = io.BytesIO()
            fastavro.schemaless_writer(buffer, SCHEMA, record)
            batch.append(buffer.getvalue())
        out.append(batch)
    return out


def live_latency(bootstrap: str, profile_path: Path, windows: int, per_window: int, window_s: float,
                 seed: int) -> dict[str, Any]:
    """Live traffic, paced at one window of event time per ``window_s`` of wall time, while the service
    runs. A window closes when the first event of the next window is on every partition (noted after the
    producer's flush of it); its alert counts when a reader of the control topic receives it."""
    payloads = live_payloads(windows, per_window, seed)
    closed: dict[int, float] = {}
    received: dict[int, float] = {}
    done = threading.Event()

    def produce_live() -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, "queue.buffering.max.messages": 1_000_000})
        began = time.perf_counter()
        for w, batch in enumerate(payloads):
            for i, value in enumerate(batch):
                producer.produce(LIVE_TOPIC, value, partition=i % PARTITIONS)
                if i == PARTITIONS - 1 and w > 0:  # window w - 1 has closed on every partition
                    producer.flush(10)
                    closed[T0 + w * 60_000] = time.perf_counter()
                elif i % 1000 == 0:
                    producer.poll(0)
            producer.flush(10)
            time.sleep(max(0.0, began + (w + 1) * window_s - time.perf_counter()))
        done.set()

    def read_alerts() -> None:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-alert-reader",
                             "auto.offset.reset": "earliest", "fetch.wait.max.ms": 5, "enable.auto.commit": False})
        consumer.subscribe([CONTROL_TOPIC])
        try:
            while not (done.is_set() and len(received) >= windows - 1) and time.perf_counter() < deadline:
                for message in consumer.consume(100, 0.05):
                    if message.error() is None and ("ce_type", b"io.driftline.alert.v1") in (message.headers() or []):
                        at = time.perf_counter()
                        alert = fastavro.schemaless_reader(io.BytesIO(message.value()), ALERT_SCHEMA)
                        end = alert["window_end"]
                        end_ms = end if isinstance(end, int) else round(end.timestamp() * 1000)
                        received.setdefault(end_ms, at)
        finally:
            consumer.close()

    with tempfile.TemporaryDirectory(prefix="driftline-kafka-live-") as tmp:
        cfg = Config.model_validate({
            "store": {"dsn": f"chdb://{Path(tmp) / 'store'}"},
            "windows": {"size": "1m", "allowed_lateness": 0, "max_future": None},
            "models": [{"name": MODEL, "references": {VERSION: str(profile_path)},
                        "policy": {"min_samples": 50, "consecutive": 1, "resolve_after": 1}}],
            "kafka": {"bootstrap_servers": bootstrap, "group_id": "bench-live", "poll_timeout": 100,
                      "control_topic": CONTROL_TOPIC, "topics": [{"topic": LIVE_TOPIC, "format": "avro"}]},
        })
        store = open_store(cfg)
        source = KafkaSource(cfg.kafka)
        deadline = time.perf_counter() + windows * window_s + 60
        try:
            service = consumer_loop(cfg, store, source, Publisher(cfg.kafka))
            while not source.assigned and time.perf_counter() < deadline:  # joined the group: go
                service.step()
            threads = [threading.Thread(target=produce_live), threading.Thread(target=read_alerts)]
            for thread in threads:
                thread.start()
            while threads[1].is_alive():
                service.step()
            for thread in threads:
                thread.join()
        finally:
            source.close()
            store.close()
    latencies = sorted(received[end] - closed[end] for end in received if end in closed)
    p50, p99 = (float(np.percentile(latencies, q)) if latencies else math.nan for q in (50, 99))
    return {"windows": windows, "events_per_window": per_window, "window_wall_s": window_s,
            "events_per_s": per_window / window_s, "alerts_measured": len(latencies), "p50_s": p50, "p99_s": p99,
            "max_s": max(latencies, default=math.nan), "target_p99_s": LATENCY_TARGET_S,
            "meets_target": bool(latencies) and p99 <= LATENCY_TARGET_S}


def run(events: int, repeats: int, seed: int, live: tuple[int, int, float]) -> dict[str, Any]:
    payloads = encode(events, seed + 1)
    began = time.perf_counter()
    decode_batch([v for _, v in payloads[:10]], SCHEMA)  # numba compiles the schema's loop once per process
    compile_s = time.perf_counter() - began
    reference = generate(50_000, seed=seed)
    profile = build_profile(reference, model=MODEL, model_version=VERSION, categorical=CATEGORICAL,
                            score_column=SCORE, decision_column=DECISION)
    with tempfile.TemporaryDirectory(prefix="driftline-kafka-profile-") as tmp, KafkaBroker() as broker:
        profile_path = Path(tmp) / f"{MODEL}-{VERSION}.json"
        save_profile(profile, profile_path)
        create_topic(broker.bootstrap, TOPIC, PARTITIONS, KEEP)
        create_topic(broker.bootstrap, LIVE_TOPIC, PARTITIONS)
        for topic in ("driftline.dead-letter", "driftline.control", CONTROL_TOPIC):
            create_topic(broker.bootstrap, topic, 1)
        produce(broker.bootstrap, payloads)
        gc.collect()
        gc.freeze()  # the harness's own data (the payloads) is not scanned by every collection of every case
        raw = [consume_loop(broker.bootstrap, f"raw-{r}", events, None) for r in range(repeats)]
        avro = [consume_loop(broker.bootstrap, f"avro-{r}", events, decode) for r in range(repeats)]
        service = [driftline_run(broker.bootstrap, f"driftline-{r}", events, profile_path) for r in range(repeats)]
        two = [driftline_run(broker.bootstrap, f"driftline-two-{r}", events, profile_path, "two")
               for r in range(repeats)]
        offline = [driftline_without_broker(broker.bootstrap, payloads, profile_path) for _ in range(repeats)]
        with one_core(broker.pid) as pinned:
            raw_one = [consume_loop(broker.bootstrap, f"raw-one-{r}", events, None) for r in range(repeats)] \
                if pinned else []
            service_one = [driftline_run(broker.bootstrap, f"driftline-one-{r}", events, profile_path)
                           for r in range(repeats)] if pinned else []
        latency = live_latency(broker.bootstrap, profile_path, *live, seed=seed + 100)
    cases = {"raw_consume": rates(raw, events), "fastavro_decode": rates(avro, events),
             "driftline": {**rates([s for s, _ in service], events), "dead_letters": [d for _, d in service]},
             "driftline_two_stages": {**rates([s for s, _ in two], events), "dead_letters": [d for _, d in two]},
             "driftline_without_broker": rates(offline, events)}
    if raw_one:
        cases["raw_consume_one_core"] = rates(raw_one, events)
        cases["driftline_one_core"] = {**rates([s for s, _ in service_one], events),
                                       "dead_letters": [d for _, d in service_one]}
    end_to_end = cases["driftline"]["events_per_s"]
    one_core_rate = cases["driftline_one_core"]["events_per_s"] if raw_one else None
    return {"events": events, "repeats": repeats, "seed": seed, "partitions": PARTITIONS, "minutes": MINUTES,
            "message_bytes_mean": sum(len(v) for _, v in payloads) / events, "cases": cases,
            "ratios": {"driftline_over_raw_consume": end_to_end / cases["raw_consume"]["events_per_s"],
                       "driftline_over_fastavro_decode": end_to_end / cases["fastavro_decode"]["events_per_s"]},
            "target_events_per_s": TARGET, "meets_target": end_to_end >= TARGET,
            "meets_target_on_one_core": None if one_core_rate is None else one_core_rate >= TARGET,
            "cpus": len(os.sched_getaffinity(0)), "numba_compile_s": compile_s,
            "close_to_alert": latency, "python": sys.version.split()[0]}


def render(results: dict[str, Any]) -> str:
    lines = [f"Kafka throughput, {results['events']:,} events x {results['repeats']} repeats, "
             f"{results['partitions']} partitions, {results['message_bytes_mean']:.0f} B/message (medians)",
             f"{'case':<26}{'median s':>10}{'events/s':>14}"]
    for name, case in results["cases"].items():
        lines.append(f"{name:<26}{case['median_s']:>10.3f}{case['events_per_s']:>14,.0f}")
    r = results["ratios"]
    lines += [f"driftline / raw consume     {r['driftline_over_raw_consume']:.3f}",
              f"driftline / fastavro decode {r['driftline_over_fastavro_decode']:.3f}",
              f"issue target: >= {results['target_events_per_s']:,} events/s end to end on one core: "
              f"{_verdict(results['meets_target'])} with the broker on the same {results['cpus']} CPUs, "
              f"{_verdict(results['meets_target_on_one_core'])} with driftline held to one CPU; "
              f"the decoder's compile, once per process: {results['numba_compile_s']:.1f} s (not in the timings)"]
    lat = results["close_to_alert"]
    lines += [f"window close -> alert received on the control topic, {lat['alerts_measured']} windows of "
              f"{lat['events_per_window']:,} events live at {lat['events_per_s']:,.0f} events/s: "
              f"p50 {lat['p50_s'] * 1000:.0f} ms, p99 {lat['p99_s'] * 1000:.0f} ms, max {lat['max_s'] * 1000:.0f} ms "
              f"(target p99 <= {lat['target_p99_s']:.0f} s: {'met' if lat['meets_target'] else 'not met'})"]
    return "\n".join(lines)


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else "met" if met else "not met"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kafka", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--live-windows", type=int, default=40, help="windows in the latency phase")
    parser.add_argument("--live-events", type=int, default=5_000, help="events per window in the latency phase")
    parser.add_argument("--live-window-s", type=float, default=0.5, help="wall seconds per window of event time")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    results = run(args.events, args.repeats, args.seed, (args.live_windows, args.live_events, args.live_window_s))
    print(render(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nresults written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Probe faust-streaming against a real Kafka 4.4 broker, next to confluent-kafka. See README.md.

Run with the faust venv's Python (it needs faust-streaming and confluent-kafka):

    .venv-faust/bin/python benchmarks/faust_probe/probe.py

The orchestrator starts a broker (tests/kafka_broker.py), produces the data once, then runs every
consumer in its own child process (fresh consumer group each time, so each run reads the topic from
the start) and prints one JSON summary. Children are this same file with a sub-command.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve()


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def emit(line: str) -> None:
    """To fd 1 directly: a faust Worker redirects sys.stdout into its log."""
    os.write(1, ("\n" + line + "\n").encode())


def report(**fields: object) -> None:
    emit("RESULT " + json.dumps(fields))


# ------------------------------------------------------------------------------------------ children


def child_faust(a: argparse.Namespace) -> None:
    """A minimal faust worker: one topic, one agent that counts (no decode: raw serializer)."""
    t0 = time.monotonic()
    import asyncio

    import faust

    overrides = {}
    for kv in a.set or []:
        k, v = kv.split("=", 1)
        try:
            overrides[k] = json.loads(v)  # numbers, true/false, lists
        except ValueError:
            overrides[k] = v
    app = faust.App(a.app_id, broker=f"kafka://{a.bootstrap}", datadir=a.datadir, **overrides)
    topic = app.topic(a.topic, key_serializer="raw", value_serializer="raw")
    st = {"n": 0, "first": None, "done": False}

    def seen(k: int) -> None:
        now = time.monotonic()
        if st["first"] is None:
            st["first"] = now
            print(f"first message after {now - t0:.2f} s", file=sys.stderr, flush=True)
        st["n"] += k
        if a.live and now - st.get("sec", 0) >= 0.2:
            st["sec"] = now
            emit("LIVE " + json.dumps({"t": time.time(), "n": st["n"]}))
        if a.n and st["n"] >= a.n and not st["done"]:
            st["done"] = True
            report(kind=f"faust-{a.mode}", count=st["n"], startup_s=st["first"] - t0,
                   seconds=now - st["first"], rate=st["n"] / (now - st["first"]), cpu_s=cpu_seconds(),
                   loadavg=os.getloadavg())
            asyncio.ensure_future(finish())  # keep iterating, so the last events get acked

    async def finish() -> None:
        await asyncio.sleep(a.linger)  # > broker_commit_interval (2.8 s): let the timer commit
        print("exiting with os._exit (no graceful shutdown)", file=sys.stderr, flush=True)
        os._exit(0)

    if a.mode == "take":
        @app.agent(topic)
        async def count(stream):  # noqa: ANN001
            async for batch in stream.take(1000, within=1):
                seen(len(batch))
    else:
        @app.agent(topic)
        async def count(stream):  # noqa: ANN001
            async for _value in stream:
                seen(1)

    from faust import Worker
    Worker(app, loglevel=a.loglevel, quiet=True).execute_from_commandline()


def child_ck(a: argparse.Namespace) -> None:
    """confluent-kafka Consumer, consume(num_messages=5000, timeout=1) batches, count (and json.loads)."""
    t0 = time.monotonic()
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": a.app_id, "auto.offset.reset": "earliest",
                  "enable.auto.commit": True})
    c.subscribe([a.topic])
    n, first = 0, None
    loads = json.loads
    try:
        while n < a.n:
            msgs = c.consume(num_messages=5000, timeout=1)
            if not msgs:
                continue
            if first is None:
                first = time.monotonic()
            if a.json:
                for m in msgs:
                    loads(m.value())
            n += len(msgs)
        now = time.monotonic()
        report(kind="ck-json" if a.json else "ck-count", count=n, startup_s=first - t0,
               seconds=now - first, rate=n / (now - first), cpu_s=cpu_seconds(), loadavg=os.getloadavg())
    finally:
        c.close()


# -------------------------------------------------------------------------------------- orchestrator


def make_event(rng: random.Random, i: int) -> bytes:
    ev = {"event_id": f"ev-{i:09d}", "request_id": f"{rng.getrandbits(128):032x}", "entity_id": f"cust-{rng.randrange(100_000):06d}",
          "model": "credit-risk-v7", "model_version": "2026.11.3", "ts": 1_795_000_000_000 + i,
          "score": round(rng.random(), 6), "label": rng.random() < 0.1,
          "features": {"amount": round(rng.lognormvariate(4, 1), 2), "age": rng.randrange(18, 90),
                       "country": rng.choice(["DE", "FR", "US", "GB", "NL"]), "tenure_days": rng.randrange(3650),
                       "channel": rng.choice(["web", "app", "pos"]), "risk_band": rng.choice("ABCDE")}}
    return json.dumps(ev, separators=(",", ":")).encode()


def produce(bootstrap: str, topic: str, n: int, seed: int = 7) -> dict:
    from confluent_kafka import Producer
    rng = random.Random(seed)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                  "queue.buffering.max.messages": 1_000_000})
    t, size = time.monotonic(), 0
    for i in range(n):
        v = make_event(rng, i)
        size += len(v)
        while True:
            try:
                p.produce(topic, v, key=str(i % 997).encode())
                break
            except BufferError:
                p.poll(0.05)
        if i % 10_000 == 0:
            p.poll(0)
    left = p.flush(60)
    assert left == 0, f"{left} messages not delivered"
    return {"messages": n, "mean_bytes": size / n, "seconds": time.monotonic() - t}


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})  # keep a reference until the results are in
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(30)


def committed_total(bootstrap: str, group: str, topic: str, partitions: int) -> int | None:
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        offs = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=15)
        vals = [tp.offset for tp in offs]
        return sum(v for v in vals if v >= 0) if any(v >= 0 for v in vals) else None
    finally:
        c.close()


def aiokafka_version_check(bootstrap: str) -> dict:
    """aiokafka (>= 0.13) negotiates each request's version from the broker's ApiVersions answer:
    per API, the broker's range and the version aiokafka picks (None: no overlap, the request fails)."""
    import asyncio
    import importlib

    from aiokafka import AIOKafkaClient

    names = {"produce": "ProduceRequest", "fetch": "FetchRequest", "offset": "OffsetRequest",
             "metadata": "MetadataRequest", "commit": "OffsetCommitRequest OffsetFetchRequest",
             "coordination": "FindCoordinatorRequest",
             "group": "JoinGroupRequest SyncGroupRequest HeartbeatRequest LeaveGroupRequest",
             "admin": "CreateTopicsRequest ApiVersionRequest", "transaction": "InitProducerIdRequest"}

    async def go() -> dict:
        client = AIOKafkaClient(bootstrap_servers=bootstrap)
        try:
            await client.bootstrap()
            node = next(iter(client.cluster.brokers())).nodeId
            versions = (await client._get_conn(node))._versions
            out = {}
            for mod, classes in names.items():
                m = importlib.import_module(f"aiokafka.protocol.{mod}")
                for cname in classes.split():
                    cls = getattr(m, cname)
                    rng = versions.get(cls.API_KEY)
                    ours = [c.API_VERSION for c in cls._CLASSES]
                    pick = max((v for v in ours if rng and rng[0] <= v <= rng[1]), default=None)
                    out[cname] = {"broker": rng, "aiokafka_has": [min(ours), max(ours)], "used": pick}
            return out
        except Exception as e:  # noqa: BLE001
            return {"error": f"{type(e).__name__}: {e}"}
        finally:
            await client.close()
    return asyncio.run(go())


def run_child(args: list[str], log: Path, timeout: float) -> dict:
    """Run a child, return its RESULT (or the error), its log tail and the wall time."""
    t = time.monotonic()
    with open(log, "w") as err, tempfile.TemporaryDirectory() as cwd:
        try:
            done = subprocess.run([sys.executable, str(HERE), *args], stdout=subprocess.PIPE, stderr=err,
                                  text=True, timeout=timeout, cwd=cwd)
            out, rc = done.stdout, done.returncode
        except subprocess.TimeoutExpired as e:
            out, rc = (e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout) or "", "timeout"
    res = {"rc": rc, "wall_s": round(time.monotonic() - t, 2), "log": str(log)}
    for line in out.splitlines():  # faust's spinner writes escape codes to stdout, without a newline
        if "RESULT " in line:
            res.update(json.loads(line.split("RESULT ", 1)[1]))
    if "rate" not in res:
        res["log_tail"] = log.read_text()[-4000:]
    return res


def live_restart(broker, out: Path, args: argparse.Namespace) -> dict:  # noqa: ANN001
    """faust agent on a trickle (200 msg/s); restart the broker mid-stream; did it carry on?"""
    from confluent_kafka import Producer
    topic = "faust-live"
    create_topic(broker.bootstrap, topic, 3)
    log = out / "faust-live.log"
    errf = open(log, "w")
    child = subprocess.Popen([sys.executable, str(HERE), "faust", "--bootstrap", broker.bootstrap, "--topic", topic,
                              "--app-id", "probe-live", "--mode", "events", "--n", "0", "--live",
                              "--datadir", str(out / "live-data"), "--loglevel", "warning"],
                             stdout=subprocess.PIPE, stderr=errf, text=True)
    samples: list[dict] = []
    threading.Thread(target=lambda: [samples.append(json.loads(ln.split("LIVE ", 1)[1])) for ln in child.stdout
                                     if "LIVE " in ln], daemon=True).start()
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "message.timeout.ms": 120_000,
                  "log_level": 2})  # its connection-refused lines during the restart are expected
    sent, stop = [0], threading.Event()

    def trickle() -> None:
        rng = random.Random(1)
        while not stop.is_set():
            p.produce(topic, make_event(rng, sent[0]))
            sent[0] += 1
            p.poll(0)
            time.sleep(0.005)
    th = threading.Thread(target=trickle, daemon=True)
    th.start()
    time.sleep(20)
    before = samples[-1]["n"] if samples else 0
    t_restart = time.time()
    broker.restart()
    t_back = time.time()
    time.sleep(args.live_after)
    stop.set()
    th.join()
    p.flush(60)
    time.sleep(8)  # > broker_commit_interval
    child.kill()
    child.wait()
    errf.close()
    after = samples[-1]["n"] if samples else 0
    resumed = next((s["t"] for s in samples if s["t"] > t_back and s["n"] > before), None)
    lines = [re.sub(r"^\[[^]]*\] \[\d+\] ", "", ln) for ln in log.read_text().splitlines()]
    errors = [ln for ln in lines if ln.startswith(("[ERROR]", "[WARNING]", "[CRITICAL]")) or "Traceback" in ln]
    distinct = sorted({re.sub(r"\d+", "N", e)[:240] for e in errors if "first message after" not in e})
    return {"sent": sent[0], "consumed_before_restart": before, "consumed_last_sample": after,
            "committed_at_kill": committed_total(broker.bootstrap, "probe-live", topic, 3),
            "restart_s": round(t_back - t_restart, 2),
            "first_progress_after_broker_back_s": round(resumed - t_back, 2) if resumed else None,
            "log": str(log), "log_error_lines": len(errors), "distinct_errors": distinct}


def orchestrate(a: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from kafka_broker import KafkaBroker  # noqa: PLC0415

    import confluent_kafka
    import faust
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"versions": {"faust": faust.__version__, "aiokafka": __import__("aiokafka").__version__,
                                  "confluent_kafka": confluent_kafka.version(), "librdkafka": confluent_kafka.libversion(),
                                  "python": sys.version.split()[0]},
                     "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}
    with KafkaBroker(out / "broker") as broker:
        summary["broker"] = {"bootstrap": broker.bootstrap, "startup_s": round(broker.startup_seconds, 1),
                             "jar": sorted(p.name for p in (REPO / ".cache/kafka/libs").glob("kafka_2.13-*.jar"))}
        print(f"broker up at {broker.bootstrap}", file=sys.stderr)
        create_topic(broker.bootstrap, a.topic, a.partitions)
        summary["produce"] = produce(broker.bootstrap, a.topic, a.n)
        print(f"produced {summary['produce']}", file=sys.stderr)
        summary["aiokafka_check_version"] = aiokafka_version_check(broker.bootstrap)
        base = ["--bootstrap", broker.bootstrap, "--topic", a.topic, "--n", str(a.n)]

        # 1. smoke: faust defaults (only datadir set, in a temp cwd), then any --faust-set fallbacks
        smoke = run_child(["faust", *base, "--app-id", "probe-smoke", "--mode", "take",
                           "--datadir", str(out / "smoke-data"), "--loglevel", "info"],
                          out / "faust-smoke.log", a.timeout)
        smoke["committed_after_exit"] = committed_total(broker.bootstrap, "probe-smoke", a.topic, a.partitions)
        summary["smoke_defaults"] = smoke
        print(f"smoke: {smoke}", file=sys.stderr)
        extra = [x for kv in a.faust_set for x in ("--set", kv)]

        # 2. throughput, interleaved rounds, fresh group each run
        runs: dict[str, list[dict]] = {}
        for r in range(a.repeats):
            for kind in a.kinds.split(","):
                gid = f"probe-{kind}-{r}"
                if kind.startswith("faust"):
                    args = ["faust", *base, "--app-id", gid, "--mode", kind.split("-")[1], *extra,
                            "--datadir", str(out / f"{gid}-data"), "--loglevel", "warning"]
                else:
                    args = ["ck", *base, "--app-id", gid] + (["--json"] if kind == "ck-json" else [])
                res = run_child(args, out / f"{gid}.log", a.timeout)
                res["loadavg_before"] = os.getloadavg()
                if kind.startswith("faust"):
                    res["committed_after_exit"] = committed_total(broker.bootstrap, gid, a.topic, a.partitions)
                runs.setdefault(kind, []).append(res)
                print(f"{gid}: rate={res.get('rate', 'FAILED')} wall={res['wall_s']}", file=sys.stderr)
        summary["runs"] = runs
        summary["median_rate"] = {k: round(statistics.median(r["rate"] for r in v if "rate" in r))
                                  for k, v in runs.items() if any("rate" in r for r in v)}

        if a.restart:
            summary["broker_restart"] = live_restart(broker, out, a)
    summary["loadavg_end"] = os.getloadavg()
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    o = sub.add_parser("run", help="start a broker, produce, run every probe (the default)")
    o.add_argument("--n", type=int, default=500_000)
    o.add_argument("--partitions", type=int, default=3)
    o.add_argument("--topic", default="scores")
    o.add_argument("--repeats", type=int, default=3)
    o.add_argument("--kinds", default="faust-take,faust-events,ck-count,ck-json")
    o.add_argument("--timeout", type=float, default=240, help="per child run, seconds")
    o.add_argument("--faust-set", action="append", default=[], metavar="KEY=VALUE",
                   help="faust App settings for the throughput runs (the smoke run always uses the defaults)")
    o.add_argument("--no-restart", dest="restart", action="store_false", help="skip the broker-restart probe")
    o.add_argument("--live-after", type=float, default=30, help="seconds to watch after the restart")
    o.add_argument("--output", default="/tmp/faust_probe")
    for name, fn in (("faust", child_faust), ("ck", child_ck)):
        c = sub.add_parser(name)
        c.set_defaults(fn=fn)
        c.add_argument("--bootstrap", required=True)
        c.add_argument("--topic", required=True)
        c.add_argument("--app-id", required=True)
        c.add_argument("--n", type=int, required=True)
        c.add_argument("--json", action="store_true")
        c.add_argument("--mode", choices=["take", "events"], default="take")
        c.add_argument("--set", action="append", metavar="KEY=VALUE", help="faust App setting")
        c.add_argument("--datadir", default="faust-data")
        c.add_argument("--loglevel", default="warning")
        c.add_argument("--linger", type=float, default=6.0)
        c.add_argument("--live", action="store_true")
    a = ap.parse_args(sys.argv[1:] or ["run"])
    if a.cmd in (None, "run"):
        if a.cmd is None:
            a = ap.parse_args(["run"])
        orchestrate(a)
    else:
        a.fn(a)


if __name__ == "__main__":
    main()

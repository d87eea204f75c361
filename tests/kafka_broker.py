"""A real Apache Kafka 4 broker (KRaft, one node) for tests, run by ``scripts/kafka-broker``.

    with KafkaBroker(tmp_path / "kafka") as broker:       # free ports, its own folder
        Producer({"bootstrap.servers": broker.bootstrap})
        broker.restart()                                  # same folder, same ports, same data
        broker.kill()                                     # SIGKILL, for crash tests; start() again

The jars come from Maven Central through ``scripts/kafka-broker install`` (``make test`` runs it first).
This helper never downloads and never skips: without Java 17+ or without the jars it raises
:class:`KafkaBrokerError` saying what is missing. The broker is started with ``--owner-pid`` of this
process, so it goes away with the test run even if the run is killed before ``stop()``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "kafka-broker"


class KafkaBrokerError(RuntimeError):
    """The broker could not be started or stopped; the message says why and where the logs are."""


def kafka_home() -> Path:
    return Path(os.environ.get("KAFKA_BROKER_HOME", REPO / ".cache" / "kafka"))


def free_port() -> int:
    """A port that nothing listens on, below Linux's ephemeral range (32768 and up by default), so that
    no client's outgoing connection takes it while the broker is down for a restart."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20_000, 32_000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise KafkaBrokerError("no free port found in 20000-31999 on 127.0.0.1")


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (the machine's PID 1 may leave orphans unreaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def check_prerequisites() -> None:
    """Raise KafkaBrokerError unless Java and the Kafka jars are there."""
    java_home = os.environ.get("JAVA_HOME")
    java = f"{java_home}/bin/java" if java_home and Path(f"{java_home}/bin/java").exists() else shutil.which("java")
    if java is None:
        raise KafkaBrokerError("Java not found (no JAVA_HOME, no java on PATH): the Kafka 4 broker that the "
                               "integration tests use needs Java 17 or later")
    libs = kafka_home() / "libs"
    if not any(libs.glob(".installed-*")) or not any(libs.glob("kafka_2.13-*.jar")):
        raise KafkaBrokerError(f"the Kafka broker jars are not in {libs}: run `scripts/kafka-broker install` "
                               "(it downloads them from Maven Central; `make test` does it first)")


class KafkaBroker:
    """One Kafka broker+controller on 127.0.0.1 with its data in ``directory``.

    Ports default to free ones picked at construction and are kept for the broker's life, restarts
    included, so a client's bootstrap address stays valid.
    """

    def __init__(self, directory: Path | str | None = None, *, port: int | None = None,
                 controller_port: int | None = None, heap: str = "512m", start_timeout: float = 60) -> None:
        self._own_dir = directory is None
        self.directory = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="kafka-"))
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self.heap = heap
        self.start_timeout = start_timeout
        self.startup_seconds: float | None = None
        """How long the last start() took, format included (first start) and readiness wait."""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.directory / "logs" / "server.log"

    @property
    def pid(self) -> int | None:
        try:
            pid = int((self.directory / "broker.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def _run(self, *args: str, timeout: float) -> str:
        try:
            done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise KafkaBrokerError(f"`kafka-broker {' '.join(args)}` took over {timeout} s "
                                   f"(logs: {self.directory / 'logs'})") from e
        if done.returncode != 0:
            raise KafkaBrokerError(f"`kafka-broker {' '.join(args)}` failed ({done.returncode}):\n"
                                   f"{done.stderr.strip()}")
        return done.stdout

    def start(self) -> KafkaBroker:
        """Start (formatting the folder the first time) and return once it answers a Metadata request."""
        check_prerequisites()
        began = time.monotonic()
        out = self._run("start", "--no-install", "--dir", str(self.directory), "--port", str(self.port),
                        "--controller-port", str(self.controller_port), "--heap", self.heap,
                        "--timeout", str(int(self.start_timeout)), "--owner-pid", str(os.getpid()),
                        timeout=self.start_timeout + 30)
        self.startup_seconds = time.monotonic() - began
        if f"bootstrap={self.bootstrap}" not in out:
            raise KafkaBrokerError(f"kafka-broker start printed {out!r}, expected bootstrap={self.bootstrap}")
        return self

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if it has not exited within ``timeout`` seconds."""
        if self.directory.exists():
            self._run("stop", "--dir", str(self.directory), "--timeout", str(int(timeout)), timeout=timeout + 30)

    def kill(self) -> None:
        """SIGKILL, as a crash would; the data stays for a later start()."""
        pid = self.pid
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid):
            if time.monotonic() > deadline:
                raise KafkaBrokerError(f"broker pid {pid} is still alive 10 s after SIGKILL")
            time.sleep(0.05)
        (self.directory / "broker.pid").unlink(missing_ok=True)

    def restart(self) -> KafkaBroker:
        """Stop cleanly and start again on the same folder and ports."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop, and remove the folder if this broker made it."""
        try:
            self.stop()
        finally:
            if self._own_dir:
                shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KafkaBroker(bootstrap={self.bootstrap!r}, directory={str(self.directory)!r}, pid={self.pid})"


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> None:
    """Create a topic and wait until every partition has a leader."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                            config=config or {})], operation_timeout=30, request_timeout=30)
    futures[name].result(timeout=30)
    deadline = time.monotonic() + 30
    while True:  # until every partition has a leader in the metadata
        topic = admin.list_topics(name, timeout=10).topics[name]
        if topic.error is None and len(topic.partitions) == partitions and \
                all(p.leader >= 0 for p in topic.partitions.values()):
            return
        assert time.monotonic() < deadline, f"topic {name} not ready: {topic}"
        time.sleep(0.05)

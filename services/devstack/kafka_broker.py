"""An Apache Kafka broker for the local stack: one KRaft node (broker and controller) on
loopback, assembled from Maven Central's artefacts, beside the zero-dependency Tansu default.

The jars are fetched once with ``mvn`` into a cache outside the repository
(``fraudstream stack fetch-kafka``, or on first use), pinned to ``KAFKA_VERSION``. The broker
keeps its log in the state directory, so unlike Tansu it keeps its topics across restarts.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Final

from services.core.errors import UserError

KAFKA_VERSION: Final = "4.1.1"
_LOG4J_VERSION: Final = "2.24.3"  # the log4j 2 Kafka 4.1 is built with, bound to its slf4j 1.7
_POM: Final = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>fraudstream</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{_LOG4J_VERSION}</version></dependency>
  </dependencies>
</project>
"""
_LOG4J2: Final = """Configuration:
  Appenders:
    Console: {name: out, target: SYSTEM_OUT, PatternLayout: {pattern: "%d %p %c{1} %m%n"}}
  Loggers:
    Root: {level: WARN, AppenderRef: {ref: out}}
    Logger: [{name: kafka.server.KafkaRaftServer, level: INFO}]
"""
FETCH_TIMEOUT_S: Final = 900


class KafkaUnavailable(UserError, RuntimeError):
    """The Kafka broker's jars cannot be had; the message says how to get them."""


def default_cache() -> Path:
    """~/.cache/fraudstream/kafka-VERSION (XDG_CACHE_HOME respected)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fraudstream" / f"kafka-{KAFKA_VERSION}"


def fetch(cache: Path | None = None) -> Path:
    """The directory of the broker's jars, fetched with Maven the first time (into ``cache``,
    by default the user's cache directory)."""
    cache = cache or default_cache()
    lib = cache / "lib"
    if (lib / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaUnavailable(
            "the Apache Kafka broker is fetched with Maven: install `mvn` (apt-get install "
            "maven) or use the default broker, Tansu"
        )
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as work:
        (Path(work) / "pom.xml").write_text(_POM)
        staging = Path(work) / "lib"
        done = subprocess.run(
            [mvn, "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={staging}"],
            cwd=work, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
            raise KafkaUnavailable(f"mvn could not fetch Kafka {KAFKA_VERSION}: {' '.join(tail)}")
        shutil.rmtree(lib, ignore_errors=True)
        staging.rename(lib)  # whole or not at all
    return lib


def properties(
    listeners: dict[str, int], controller_port: int, data: Path, extra: dict[str, str] | None = None
) -> str:
    """A single node's server.properties: ``listeners`` maps a security protocol (PLAINTEXT,
    SSL, SASL_SSL) to its loopback port; PLAINTEXT carries the traffic between brokers."""
    named = {**listeners, "CONTROLLER": controller_port}
    lines = [
        "process.roles=broker,controller", "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
        "listeners=" + ",".join(f"{name}://127.0.0.1:{port}" for name, port in named.items()),
        "advertised.listeners="
        + ",".join(f"{name}://127.0.0.1:{port}" for name, port in listeners.items()),
        "controller.listener.names=CONTROLLER", "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map="
        + ",".join(f"{name}:{'PLAINTEXT' if name == 'CONTROLLER' else name}" for name in named),
        f"log.dirs={data / 'log'}", "num.partitions=1", "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1", "transaction.state.log.min.isr=1",
        "group.initial.rebalance.delay.ms=0", "auto.create.topics.enable=false",
        # A development broker: records up to 4 MiB, so oversized input reaches the job's
        # dead-letter path (a production cluster's 1 MiB limit refuses it at the producer).
        "message.max.bytes=4194304",
    ]  # fmt: skip
    lines += [f"{key}={_escaped(value)}" for key, value in (extra or {}).items()]
    return "\n".join(lines) + "\n"


def _escaped(value: str) -> str:
    """A value for a Java properties file: backslashes and line breaks escaped."""
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def new_cluster_id() -> str:
    """A random cluster id as Kafka makes them: never starting with "-", which the storage
    tool would read as an option (one id in 64 did, and failed the broker's start)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def prepare(lib: Path, java_home: Path, data: Path, server_properties: str) -> list[str]:
    """The broker's command line; its storage formatted on first use (a new cluster id)."""
    data.mkdir(parents=True, exist_ok=True)
    config = data / "server.properties"
    config.write_text(server_properties)
    config.chmod(0o600)  # it may hold a private key
    (data / "log4j2.yaml").write_text(_LOG4J2)
    java = [str(java_home / "bin" / "java"), "-cp", f"{lib}/*",
            f"-Dlog4j2.configurationFile={data / 'log4j2.yaml'}"]  # fmt: skip
    if not (data / "log" / "meta.properties").is_file():
        subprocess.run(
            [*java, "kafka.tools.StorageTool", "format", "-t", new_cluster_id(), "-c",
             str(config)], capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
    return [*java, "-Xmx768m", "kafka.Kafka", str(config)]

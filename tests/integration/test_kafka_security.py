"""Kafka security, live, through the one client configuration: an Apache Kafka broker with TLS
(client certificates required) and SASL_SSL with SCRAM-SHA-512, a password with quotes and a
backslash; the producer, the PyFlink job and the feedback app each connect and do their work."""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from cryptography.hazmat.primitives import serialization

from models.lake import Lake
from services.clients.produce import generated_items
from services.clients.producer import TransactionProducer
from services.clients.reading import read_until_idle
from services.core import kafka
from services.core.settings import Settings
from services.devstack import kafka_broker, processes, stack
from services.devstack.java import find_java_home
from services.devstack.processes import free_loopback_port
from services.generator import GeneratorConfig

pytestmark = pytest.mark.integration
USER, PASSWORD = "fraud'stream", "pa\"ss\\wo'rd"  # every character JAAS and SQL must escape
COUNT = 300


@dataclass(frozen=True)
class SecuredKafka:
    plain: int
    ssl: int
    sasl_ssl: int
    ca: Path
    client_cert: Path
    client_key: Path


def _pkcs8(key_pem: bytes) -> bytes:
    """The PKCS#8 form, the only one the Java client reads inline."""
    key = serialization.load_pem_private_key(key_pem, None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def _tls_files(folder: Path) -> tuple[trustme.CA, trustme.LeafCert]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    folder.mkdir(parents=True)
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    client = ca.issue_cert("fraudstream-client")
    client.cert_chain_pems[0].write_to_path(str(folder / "client.pem"))
    # Unencrypted (a 0600 file or a mounted Secret): Java's client cannot read a PBES2-encrypted
    # PKCS#8 key ("PBES2 SecretKeyFactory not available"), the form openssl and cryptography write.
    (folder / "client.key").write_bytes(_pkcs8(client.private_key_pem.bytes()))
    return ca, server


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    root = tmp_path_factory.mktemp("secured-kafka")
    ca, server = _tls_files(root / "tls")
    ports = {"PLAINTEXT": free_loopback_port(), "SSL": free_loopback_port(),
             "SASL_SSL": free_loopback_port()}  # fmt: skip
    tls = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.certificate.chain": b"".join(p.bytes() for p in server.cert_chain_pems)
        .decode(),
        "ssl.keystore.key": _pkcs8(server.private_key_pem.bytes()).decode(),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.certificates": ca.cert_pem.bytes().decode(),
        "listener.name.ssl.ssl.client.auth": "required",  # mutual TLS on the SSL listener
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    }  # fmt: skip
    lib = kafka_broker.fetch()
    config = kafka_broker.properties(ports, free_loopback_port(), root / "data", tls)
    argv = kafka_broker.prepare(lib, find_java_home(), root / "data", config)
    record = processes.spawn("secured-kafka", argv, root / "kafka.log")
    try:
        processes.wait_until(lambda: all(processes.port_open(p) for p in ports.values()), 90,
                             "the secured broker's listeners")  # fmt: skip
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{ports['PLAINTEXT']}"})
        scram = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
        upsert = UserScramCredentialUpsertion(USER, scram, PASSWORD.encode())
        for future in admin.alter_user_scram_credentials([upsert]).values():
            future.result(30)
        kafka.create_topics(Settings.of(kafka_bootstrap_servers=f"127.0.0.1:{ports['PLAINTEXT']}"))
        tls_dir = root / "tls"
        yield SecuredKafka(ports["PLAINTEXT"], ports["SSL"], ports["SASL_SSL"], tls_dir / "ca.pem",
                           tls_dir / "client.pem", tls_dir / "client.key")  # fmt: skip
    finally:
        processes.stop(record)


def _settings(secured: SecuredKafka, mode: str, base: Settings) -> Settings:
    common = {"kafka_ssl_ca_location": secured.ca}
    if mode == "mtls":
        return base.updated(common | {
            "kafka_bootstrap_servers": f"127.0.0.1:{secured.ssl}",
            "kafka_security_protocol": "SSL", "kafka_ssl_certificate_location": secured.client_cert,
            "kafka_ssl_key_location": secured.client_key,
        })  # fmt: skip
    return base.updated(common | {
        "kafka_bootstrap_servers": f"127.0.0.1:{secured.sasl_ssl}",
        "kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": USER, "kafka_sasl_password": PASSWORD,
    })  # fmt: skip


def _ready(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as reply:
        return b"fraudstream_feedback_ready 1.0" in reply.read()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["sasl_scram", "mtls"])
def test_producer_job_and_feedback_app_work_over_a_secured_broker(
    secured: SecuredKafka, mode: str, tmp_path: Path
) -> None:
    base = Settings.of(state_dir=tmp_path / "state", feedback_metrics_port=0)
    local = stack.up(base, feedback=False)  # Redis and scoring; its own Tansu stays unused
    try:
        settings = _settings(secured, mode, stack.client_settings(base, local)).updated({
            "job_group_id": f"job-{mode}", "job_metrics_port": 0, "job_from_beginning": True,
            "feedback_metrics_port": free_loopback_port(), "lake_flush_s": 1.0,
            "topic_transactions": f"transactions-{mode}", "topic_decisions": f"decisions-{mode}",
            "topic_alerts": f"alerts-{mode}",
        })  # fmt: skip
        kafka.create_topics(settings)  # through the secured listener: its own topics
        with TransactionProducer(settings) as producer:
            for item in generated_items(GeneratorConfig(seed=61), COUNT):
                producer.send(item.transaction)
        assert producer.report.delivered == COUNT, producer.report.errors
        job = stack.start_job(settings, tmp_path / "logs")
        env = settings.child_environment()
        app = processes.spawn("feedback-app", [sys.executable, "-m", "services.cli",
                              "feedback-app"], tmp_path / "logs" / "app.log", env=env)  # fmt: skip
        try:
            decided: set[bytes] = set()

            def all_decided() -> bool:
                decided.update(r.value for r in read_until_idle(settings,
                               settings.topic.decisions, 1.0, timeout=20))  # fmt: skip
                return len(decided) >= COUNT

            processes.wait_until(all_decided, 240, f"{COUNT} decisions over {mode}", 1.0)
            port = settings.feedback.metrics_port
            processes.wait_until(lambda: _ready(port), 120, f"feedback app ready over {mode}")
            lake = Lake(settings.lake_path)  # the app's librdkafka archive, over the same config
            processes.wait_until(lambda: lake.rows("transactions") >= COUNT, 120,
                                 f"{COUNT} transactions archived over {mode}", 1.0)  # fmt: skip
        finally:
            processes.stop(job)
            processes.stop(app)
    finally:
        stack.down(base)
    assert len(decided) == COUNT

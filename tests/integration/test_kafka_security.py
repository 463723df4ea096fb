"""Kafka security, live, through the one client configuration: an Apache Kafka broker with TLS
(client certificates required) and SASL_SSL with SCRAM-SHA-512, a password with quotes and a
backslash; the producer, the PyFlink job and the feedback app each connect and do their work."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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

from models.lake.tables import Lake
from services.clients.produce import generated_items
from services.clients.producer import TransactionProducer
from services.clients.reading import read_until_idle
from services.core import kafka
from services.core.settings import Settings
from services.devstack import kafka_broker, processes, stack
from services.devstack.java import find_java_home
from services.devstack.processes import free_loopback_port
from services.generator import GeneratorConfig
from tests.environment import without_settings

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


def _secrets_seen(text: bytes, settings: Settings, client_key: Path) -> list[str]:
    """Which of the run's secrets ``text`` holds: the SASL password (as given, and escaped
    for JAAS), the token key, a line of the client's private key."""
    password = settings.kafka.sasl_password
    token_key = settings.token.key
    assert token_key is not None
    key_lines = [line for line in client_key.read_text().splitlines() if "-----" not in line]
    secrets = {"token key": token_key.get_secret_value().encode(),
               "client key": key_lines[len(key_lines) // 2].encode()}  # fmt: skip
    if password is not None:
        secrets["password"] = password.get_secret_value().encode()
        secrets["password (JAAS)"] = b'pa\\"ss\\\\wo'
    return [name for name, secret in secrets.items() if secret in text]


def _environments(group: int) -> bytes:
    """The environments of the running processes of a process group (the job: its driver, the
    JVM, the Python workers)."""
    found = b""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.getpgid(int(proc.name)) == group:
                    found += (proc / "environ").read_bytes()
            except (OSError, ProcessLookupError):
                continue
    return found


def _pyflink_logs(since: float) -> list[Path]:
    import pyflink

    folder = Path(pyflink.__file__).parent / "log"
    return [p for p in folder.glob("*") if p.is_file() and p.stat().st_mtime >= since]


def _ready(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as reply:
        return b"fraudstream_feedback_ready 1.0" in reply.read()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["sasl_scram", "mtls"])
def test_producer_job_and_feedback_app_work_over_a_secured_broker(
    secured: SecuredKafka, mode: str, tmp_path: Path
) -> None:
    base = Settings.of(state_dir=tmp_path / "state", feedback_metrics_port=0)
    # Redis and scoring; its own Tansu stays unused
    local = stack.up(base, feedback=False, workbench=False)
    started = time.time()
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
            environments = _environments(job.pid) + _environments(app.pid)
        finally:
            processes.stop(job)
            processes.stop(app)
    finally:
        stack.down(base)
    assert len(decided) == COUNT
    # No secret in a process environment, nor in any log, PyFlink's worker log included (on
    # cdc8e54 Beam wrote the worker's environment, the SCRAM password and token key in it).
    assert environments, "no process environment was read: the check would pass vacuously"
    assert _secrets_seen(environments, settings, secured.client_key) == []
    logs = [*(tmp_path / "logs").glob("*.log"), *(settings.state_dir / "logs").glob("*"),
            *_pyflink_logs(started)]  # fmt: skip
    text = b"".join(path.read_bytes() for path in logs if path.is_file())
    assert len(text) > 10_000, "the logs were not found: the scan would pass vacuously"
    assert _secrets_seen(text, settings, secured.client_key) == []
    assert _secrets_seen(secured.client_key.read_bytes(), settings, secured.client_key) == [
        "client key"
    ]  # the negative control: the scan sees a secret where it is


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("case", "cause"),
    [("wrong password", "authentication failed"),
     ("no client certificate", "refused this client"),
     ("no broker", "broker unreachable")],
)  # fmt: skip
def test_a_misconfigured_client_says_why_in_one_line(
    secured: SecuredKafka, tmp_path: Path, case: str, cause: str
) -> None:
    """On cdc8e54 `produce` took 61 s to say "not acknowledged" amid hundreds of librdkafka
    lines, and `read` printed an 81-line traceback."""
    env = without_settings() | {
        "FRAUDSTREAM_STACK_ENDPOINTS": "false", "FRAUDSTREAM_STATE_DIR": str(tmp_path),
        "FRAUDSTREAM_KAFKA_SSL_CA_LOCATION": str(secured.ca), "FRAUDSTREAM_TOKEN_KEY": "ab" * 32,
    }  # fmt: skip
    if case == "wrong password":
        env |= {"FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{secured.sasl_ssl}",
                "FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "FRAUDSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "FRAUDSTREAM_KAFKA_SASL_USERNAME": USER,
                "FRAUDSTREAM_KAFKA_SASL_PASSWORD": "not the password"}  # fmt: skip
    elif case == "no client certificate":
        env |= {"FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{secured.ssl}",
                "FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL"}  # fmt: skip
    else:
        env |= {"FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_loopback_port()}"}
    commands = [
        ("produce", "--count", "3"), ("read", "transactions", "--count", "1"),
        ("feedback", "t1", "--label", "fraud"), ("feedback-app",), ("job", "run"),
    ]  # fmt: skip
    for command in commands:
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "services.cli", *command], env=env,
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        took = time.monotonic() - started
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0, (command, done.stdout)
        assert len(lines) == 1, (command, done.stderr[-2000:])
        assert cause in lines[0], (command, lines[0])
        assert took < 25, (command, took)

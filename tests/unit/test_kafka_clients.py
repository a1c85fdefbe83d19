"""TLS and SASL reach every Kafka client: aiokafka's options and faust's credentials agree, the
settings refuse a half-configured connection, and no product code builds a client another way."""

import ast
import ssl
from pathlib import Path

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from services.kafka.clients import client_options, faust_credentials
from services.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BASE = {"KAFKA_BOOTSTRAP_SERVERS": "k1:9093,k2:9093", "DATABASE_URL": "postgresql://x/y"}


def settings(**env: str) -> Settings:
    return Settings.from_env({**BASE, **env})


def test_plaintext_is_the_default() -> None:
    s = settings()
    assert client_options(s) == {"bootstrap_servers": "k1:9093,k2:9093", "security_protocol": "PLAINTEXT"}
    assert faust_credentials(s) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_over_tls_reaches_aiokafka_and_faust_alike(mechanism: str) -> None:
    s = settings(
        KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SASL_MECHANISM=mechanism,
        KAFKA_SASL_USERNAME="svc-ticketing", KAFKA_SASL_PASSWORD="pw-123",
    )  # fmt: skip
    options = client_options(s)
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["sasl_mechanism"], options["sasl_plain_username"], options["sasl_plain_password"]) == (
        mechanism, "svc-ticketing", "pw-123",
    )  # fmt: skip
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED and options["ssl_context"].check_hostname
    faust_side = credentials_to_aiokafka_auth(faust_credentials(s))
    for key in ("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
        assert faust_side[key] == options[key], key


def test_tls_alone() -> None:
    s = settings(KAFKA_SECURITY_PROTOCOL="SSL")
    assert client_options(s)["security_protocol"] == "SSL"
    assert credentials_to_aiokafka_auth(faust_credentials(s))["security_protocol"] == "SSL"


def test_sasl_plaintext_has_no_tls_context() -> None:
    s = settings(KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", KAFKA_SASL_USERNAME="u", KAFKA_SASL_PASSWORD="p")
    assert "ssl_context" not in client_options(s)
    assert credentials_to_aiokafka_auth(faust_credentials(s))["security_protocol"] == "SASL_PLAINTEXT"


def test_the_password_can_come_from_a_file_and_never_prints(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-a-file\n")
    s = settings(
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_USERNAME="u",
        KAFKA_SASL_PASSWORD_FILE=str(tmp_path / "pw"),
    )
    assert client_options(s)["sasl_plain_password"] == "from-a-file"
    assert "from-a-file" not in repr(s)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_PASSWORD"),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": "GSSAPI",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD": "p",
            },
            "KAFKA_SASL_MECHANISM",
        ),
        ({"KAFKA_SSL_CAFILE": "/ca.pem"}, "does not use TLS"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": "/c.pem"}, "KAFKA_SSL_KEYFILE"),
    ],
)
def test_half_configured_connections_are_refused_by_name(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        settings(**env)


CONSTRUCTORS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}


def test_every_kafka_client_of_the_product_takes_the_shared_options() -> None:
    """A client built from the bootstrap address alone would talk plaintext to a TLS-only cluster."""
    seen = []
    for path in sorted((ROOT / "services").rglob("*.py")):
        if path.name == "embedded.py":  # the dev stack's own broker probe
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            spread = [k.value for k in node.keywords if k.arg is None]
            if name in CONSTRUCTORS:
                seen.append(path.name)
                assert any(
                    isinstance(v, ast.Call) and getattr(v.func, "id", "") == "client_options" for v in spread
                ), f"{path.relative_to(ROOT)}:{node.lineno}"
            if name == "StoppableApp":
                seen.append(path.name)
                assert any(k.arg == "broker_credentials" for k in node.keywords), (
                    f"{path.relative_to(ROOT)}:{node.lineno}"
                )
    assert sorted(set(seen)) == ["app.py", "publish.py", "relay.py", "topics.py"]

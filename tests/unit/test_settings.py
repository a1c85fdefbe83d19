import secrets
from pathlib import Path

import pytest

from services.settings import DEV_SECRET_FILE, Settings


def test_defaults_and_topic_prefix() -> None:
    s = Settings.from_env({"TICKETING_TOPIC_PREFIX": "acme.", "TICKETING_ENV": "dev"})
    assert s.environment == "dev"
    assert s.kafka_bootstrap_servers is None and s.database_url is None
    assert (s.topics.detections, s.topics.deadletter, s.topics.ticket_events) == (
        "acme.detections",
        "acme.detections.deadletter",
        "acme.ticket-events",
    )
    assert s.kafka.session_timeout_ms == 6000
    assert s.state_dir == Path(".state").resolve()


def test_environment_selects_client_timings() -> None:
    assert Settings.from_env({"TICKETING_ENV": "test"}).kafka.session_timeout_ms == 2000
    assert Settings.from_env({"TICKETING_ENV": "prod"}).kafka.session_timeout_ms >= 6000
    with pytest.raises(ValueError, match="TICKETING_ENV"):
        Settings.from_env({"TICKETING_ENV": "staging"})


def test_services_require_both_addresses() -> None:
    with pytest.raises(RuntimeError, match="DATABASE_URL"):
        Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}).require_infra()
    s = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "DATABASE_URL": "postgresql://x/y"})
    assert s.require_infra() == ("k:9092", "postgresql://x/y")


def test_production_is_the_default_and_never_reads_the_dev_secret(tmp_path: Path) -> None:
    """A forgotten TICKETING_ENV must not fall back to the secret `make run` leaves in the state folder."""
    (tmp_path / DEV_SECRET_FILE).write_text(secrets.token_urlsafe(48))
    s = Settings.from_env({"TICKETING_STATE_DIR": str(tmp_path)})
    assert s.environment == "prod"
    assert s.jwt_secret is None
    with pytest.raises(RuntimeError, match="TICKETING_JWT_SECRET"):
        s.require_secret()
    dev = Settings.from_env({"TICKETING_STATE_DIR": str(tmp_path), "TICKETING_ENV": "dev"})
    assert dev.jwt_secret == (tmp_path / DEV_SECRET_FILE).read_text()


def test_token_lifetime_cap_comes_from_the_environment() -> None:
    assert Settings.from_env({}).token_max_ttl_s == 30 * 86400
    assert Settings.from_env({"TICKETING_TOKEN_MAX_TTL": "12h"}).token_max_ttl_s == 12 * 3600


def test_single_sign_on_settings_are_all_or_nothing(tmp_path: Path) -> None:
    assert Settings.from_env({"TICKETING_ENV": "test"}).oidc is None
    base = {"TICKETING_OIDC_ISSUER": "https://idp.example/realms/soc", "TICKETING_OIDC_CLIENT_ID": "ticketing",
            "TICKETING_OIDC_REDIRECT_URL": "https://soc.example/auth/callback"}  # fmt: skip
    with pytest.raises(ValueError, match="TICKETING_OIDC_CLIENT_SECRET"):
        Settings.from_env(base)
    secret = tmp_path / "client-secret"
    secret.write_text("from-a-mounted-secret\n")
    oidc = Settings.from_env({**base, "TICKETING_OIDC_CLIENT_SECRET_FILE": str(secret)}).oidc
    assert oidc is not None and oidc.client_secret == "from-a-mounted-secret" and "from-a" not in repr(oidc)
    assert oidc.issuer == "https://idp.example/realms/soc" and oidc.cookie_secure  # prod: https only
    assert (oidc.idle_timeout_s, oidc.absolute_timeout_s, oidc.groups_claim) == (1800, 43200, "groups")
    dev = Settings.from_env({**base, "TICKETING_ENV": "dev", "TICKETING_OIDC_CLIENT_SECRET": "s",
                             "TICKETING_SESSION_IDLE_TIMEOUT": "5m", "TICKETING_OIDC_OPERATOR_GROUP": "ops"}).oidc  # fmt: skip
    assert (
        dev is not None
        and not dev.cookie_secure
        and dev.idle_timeout_s == 300
        and dev.operator_group == "ops"
    )
    with pytest.raises(ValueError, match="TICKETING_OIDC_REDIRECT_URL"):
        Settings.from_env({**base, "TICKETING_OIDC_CLIENT_SECRET": "s", "TICKETING_OIDC_REDIRECT_URL": "/cb"})


def test_the_evidence_store_is_a_bucket_only_when_one_is_named(tmp_path: Path) -> None:
    assert Settings.from_env({"TICKETING_ENV": "test"}).evidence_s3 is None
    secret = tmp_path / "s3-secret"
    secret.write_text("from-a-file\n")
    s3 = Settings.from_env(
        {
            "TICKETING_ENV": "test",
            "TICKETING_EVIDENCE_S3_BUCKET": "soc-evidence",
            "TICKETING_EVIDENCE_S3_ENDPOINT": "https://minio.example:9000",
            "TICKETING_EVIDENCE_S3_PREFIX": "/prod/",
            "TICKETING_EVIDENCE_S3_ACCESS_KEY_ID": "ticketing",
            "TICKETING_EVIDENCE_S3_SECRET_ACCESS_KEY_FILE": str(secret),
        }
    ).evidence_s3
    assert s3 is not None
    assert (s3.bucket, s3.endpoint_url, s3.prefix, s3.region) == (
        "soc-evidence", "https://minio.example:9000", "prod/", "us-east-1"
    )  # fmt: skip
    assert s3.secret_access_key == "from-a-file" and "from-a-file" not in repr(s3)
    with pytest.raises(ValueError, match="go together"):  # a key id without its secret
        Settings.from_env({"TICKETING_EVIDENCE_S3_BUCKET": "b", "TICKETING_EVIDENCE_S3_ACCESS_KEY_ID": "k"})
    with pytest.raises(ValueError, match="http"):
        Settings.from_env(
            {"TICKETING_EVIDENCE_S3_BUCKET": "b", "TICKETING_EVIDENCE_S3_ENDPOINT": "minio:9000"}
        )

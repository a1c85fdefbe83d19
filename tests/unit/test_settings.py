from pathlib import Path

import pytest

from services.settings import Settings


def test_defaults_and_topic_prefix() -> None:
    s = Settings.from_env({"TICKETING_TOPIC_PREFIX": "acme."})
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

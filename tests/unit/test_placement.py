"""The placement rule and setting (domain.placement): the shard an org is in, and which shards
go to which database."""

import hashlib

import pytest

from domain.placement import parse_placement, shard_of
from services.settings import Settings


def test_an_orgs_shard_is_the_first_32_bits_of_its_md5() -> None:
    for oid in ("a", "org-1", "ü-org", "x" * 300):
        digest = int(hashlib.md5(oid.encode()).hexdigest()[:8], 16)
        assert shard_of(oid, 7) == digest % 7
        assert shard_of(oid, 1) == 0
    assert parse_placement("", 4) == {}


def test_the_placement_setting_is_checked() -> None:
    env = {"TICKETING_ENV": "test", "TICKETING_LOG_SHARDS": "4"}
    s = Settings.from_env(
        {**env, "TICKETING_PLACEMENT": "0-1=postgresql://a/x?sslmode=require; 3=postgresql://b/y"}
    )
    assert s.placement == {
        0: "postgresql://a/x?sslmode=require",
        1: "postgresql://a/x?sslmode=require",
        3: "postgresql://b/y",
    }
    assert s.as_owner().placement == s.placement
    for bad, message in (
        ("4=postgresql://a/x", "not within 0-3"),
        ("1=postgresql://a/x 1=postgresql://b/y", "placed twice"),
        ("one=postgresql://a/x", "SHARD"),
        ("2-1=postgresql://a/x", "not within"),
    ):
        with pytest.raises(ValueError, match=message):
            Settings.from_env({**env, "TICKETING_PLACEMENT": bad})
    with pytest.raises(ValueError, match="TICKETING_MIGRATION_PLACEMENT"):
        Settings.from_env(
            {
                **env,
                "TICKETING_PLACEMENT": "1=postgresql://a/x",
                "TICKETING_MIGRATION_PLACEMENT": "2=postgresql://a/x",
            }
        )

"""Log lines: JSON with the correlation fields, credentials masked whatever the message says."""

import json
import logging

import pytest

from services.logs import configure, redact

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbmFAc29jIn0.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
KEY = "shk_0123456789abcdef_Zq81mX0vSecretPartOfTheKey0123456789abcdef"


def test_a_line_is_one_json_object_with_the_correlation_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure("INFO", "relay", json_lines=True)
    logging.getLogger("services.x").info("delivered %d", 3, extra={"event_id": "e-1", "channel": "webhook"})
    logging.getLogger("services.x").debug("not at INFO")
    [line] = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert record["level"] == "info" and record["process"] == "relay" and record["event"] == "delivered 3"
    assert (record["event_id"], record["channel"]) == ("e-1", "webhook") and record["ts"].endswith("+00:00")


@pytest.mark.parametrize(
    "message",
    [
        f"Authorization: Bearer {TOKEN}",
        f"token {TOKEN} refused",
        f"Authorization: ExtraHop apikey={KEY}",
        f"key {KEY} used",
        'config {"api_key": "appliance-key-Zq81mX0v"}',
        "Basic ZXh0cmFob3A6c2VjcmV0",
    ],
)
def test_credentials_never_reach_a_line(message: str, capsys: pytest.CaptureFixture[str]) -> None:
    configure("INFO", "api", json_lines=True)
    logging.getLogger("x").warning(message)
    logging.getLogger("x").warning("%s", message)  # as an argument too
    out = capsys.readouterr().err
    for secret in (TOKEN, KEY, "Zq81mX0v", "ZXh0cmFob3A6c2VjcmV0"):
        assert secret not in out
    assert out.count("<") >= 2  # masked, not dropped


def test_an_api_key_keeps_its_id_so_the_line_still_says_which() -> None:
    assert redact(f"key {KEY}") == "key shk_0123456789abcdef_<redacted>"

import pytest

from services.auth.api_keys import digest, parse


def test_a_key_is_parsed_into_its_id_and_secret() -> None:
    key = "shk_0123456789abcdef_" + "A" * 43
    assert parse(key) == ("0123456789abcdef", "A" * 43)
    assert parse(f"  {key}\n") == ("0123456789abcdef", "A" * 43)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "shk_",
        "shk_0123456789abcdef_short",
        "shk_0123456789ABCDEF_" + "A" * 43,
        "eyJhbGciOi.x.y",
        "x" * 64,
    ],
)
def test_anything_else_is_not_a_key(text: str) -> None:
    assert parse(text) is None


def test_the_digest_is_of_the_secret() -> None:
    assert digest("a") != digest("b") and len(digest("a")) == 32

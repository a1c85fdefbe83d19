import time

import jwt
import pytest

from services.auth.tokens import InvalidToken, TokenService, parse_ttl

SECRET = "s" * 40


def test_mint_and_verify() -> None:
    svc = TokenService(SECRET)
    p = svc.verify(svc.mint("alice@example.com", {"org": ["investigation.get"]}, ttl_s=60))
    assert p.subject == "alice@example.com"
    assert p.has("investigation.get", "org")
    assert not p.has("investigation.set", "org")
    assert not p.has("investigation.get", "other") and not p.sees_org("other")
    assert p.token_id


def test_expired_tampered_and_foreign_tokens_are_invalid() -> None:
    svc = TokenService(SECRET)
    with pytest.raises(InvalidToken):
        svc.verify(svc.mint("a", {"o": ["investigation.get"]}, ttl_s=10, now=time.time() - 100))
    good = svc.mint("a", {"o": ["investigation.get"]}, ttl_s=60)
    header, _payload, sig = good.split(".")
    forged_payload = jwt.encode({"sub": "a", "perms": {"*": ["org.conf.set"]}}, "k" * 32).split(".")[1]
    for bad in (
        f"{header}.{forged_payload}.{sig}",
        good[:-2],
        TokenService("t" * 40).mint("a", {}, ttl_s=60),
    ):
        with pytest.raises(InvalidToken):
            svc.verify(bad)
    no_exp = jwt.encode(
        {"sub": "a", "iat": int(time.time()), "iss": "soc-ticketing"}, SECRET, algorithm="HS256"
    )
    with pytest.raises(InvalidToken):
        svc.verify(no_exp)
    none_alg = jwt.encode(
        {"sub": "a", "exp": 9999999999, "iat": 1, "iss": "soc-ticketing"}, None, algorithm="none"
    )
    with pytest.raises(InvalidToken):
        svc.verify(none_alg)


def test_wildcard_is_for_operators_only() -> None:
    svc = TokenService(SECRET)
    with pytest.raises(ValueError, match="operator"):
        svc.mint("a", {"*": ["investigation.get"]}, ttl_s=60)
    smuggled = jwt.encode(
        {"sub": "a", "exp": int(time.time()) + 60, "iat": int(time.time()), "iss": "soc-ticketing",
         "perms": {"*": ["investigation.get"]}},
        SECRET, algorithm="HS256", headers={"kid": "service"},
    )  # fmt: skip
    with pytest.raises(InvalidToken):
        svc.verify(smuggled)
    op = svc.verify(svc.mint("ops", {"*": ["investigation.get"]}, ttl_s=60, operator=True))
    assert op.has("investigation.get", "any-org") and op.sees_org("any-org")


def test_unknown_permissions_and_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown permissions"):
        TokenService(SECRET).mint("a", {"o": ["admin"]}, ttl_s=60)
    with pytest.raises(ValueError, match="at least 32"):
        TokenService("short")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("8h", 28800), ("30d", 2592000)]
)
def test_ttl(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-5m", "0", "8x", "eight"])
def test_bad_ttl(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ttl(text)


def test_a_verified_token_is_remembered_only_until_it_expires() -> None:
    svc = TokenService(SECRET)
    now = time.time()
    token = svc.mint("a", {"o": ["investigation.get"]}, ttl_s=1, now=now)
    first = svc.verify(token)
    assert svc.verify(token) is first  # from the cache: no second signature check
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    with pytest.raises(InvalidToken):
        svc.verify(forged)  # the cache is keyed by the whole token, signature included
    time.sleep(max(0.0, int(now) + 1 - time.time()) + 1.05)  # past exp (whole seconds)
    with pytest.raises(InvalidToken):
        svc.verify(token)

import secrets
import time

import jwt
import pytest

from services.auth.tokens import InvalidToken, TokenService, secret_problem
from services.settings import parse_ttl

SECRET = "kV3q9-Zr2xW8pLm4Tn7yB1cH6fJ0dS5gA_uE2iO9rQ"


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
        TokenService(SECRET[::-1]).mint("a", {}, ttl_s=60),
    ):
        with pytest.raises(InvalidToken):
            svc.verify(bad)
    no_exp = jwt.encode(
        {"sub": "a", "iat": int(time.time()), "iss": "soc-ticketing"}, SECRET, algorithm="HS256"
    )
    with pytest.raises(InvalidToken):
        svc.verify(no_exp)
    none_alg = jwt.encode(
        {"sub": "a", "exp": 9999999999, "iat": 1, "iss": "soc-ticketing"},
        None,  # type: ignore[arg-type]  # (`none` takes no key; PyJWT's typing with [crypto] says otherwise)
        algorithm="none",
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
    ("secret", "reason"),
    [
        ("change-me-to-48-random-characters-before-any-real-use", "placeholder"),  # the old compose file's
        ("my-Super-SECRET-value-for-the-ticketing-jwt", "placeholder"),
        ("s" * 64, "entropy"),
        ("abababababababababababababababababababab", "entropy"),
        ("passw0rdpassw0rdpassw0rdpassw0rd", "entropy"),
    ],
)
def test_placeholder_and_low_entropy_secrets_are_refused(secret: str, reason: str) -> None:
    assert secret_problem(secret) is not None and reason in secret_problem(secret)  # type: ignore[operator]
    with pytest.raises(ValueError, match=reason):
        TokenService(secret)


def test_generated_secrets_are_accepted() -> None:
    for _ in range(200):
        assert secret_problem(secrets.token_urlsafe(48)) is None
        assert secret_problem(secrets.token_hex(32)) is None


def test_token_lifetime_is_capped_at_mint_and_at_verification() -> None:
    svc = TokenService(SECRET, max_ttl_s=3600)
    with pytest.raises(ValueError, match="at most 3600"):
        svc.mint("a", {"o": ["investigation.get"]}, ttl_s=3601)
    now = int(time.time())
    # Signed with the right key, but issued for a year: refused, however fresh.
    long_lived = jwt.encode(
        {"iss": "soc-ticketing", "sub": "a", "iat": now, "exp": now + 365 * 86400, "perms": {"o": ["investigation.get"]}},
        SECRET, algorithm="HS256", headers={"kid": "service"},
    )  # fmt: skip
    with pytest.raises(InvalidToken):
        svc.verify(long_lived)
    assert svc.verify(svc.mint("a", {"o": ["investigation.get"]}, ttl_s=3600)).subject == "a"


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


def test_a_rotated_secret_keeps_verifying_its_tokens_under_their_own_kid() -> None:
    old, new = secrets.token_urlsafe(48), secrets.token_urlsafe(48)
    token = TokenService(old).mint("ana@x", {"org": ["investigation.get"]}, ttl_s=60)
    rotated = TokenService(new, previous_secrets=(old,))
    assert rotated.verify(token).subject == "ana@x"  # minted before the rotation: still good
    fresh = rotated.mint("ana@x", {"org": ["investigation.get"]}, ttl_s=60)
    assert jwt.get_unverified_header(fresh)["kid"] != jwt.get_unverified_header(token)["kid"]
    with pytest.raises(InvalidToken):
        TokenService(new).verify(token)  # once the old secret is dropped, its tokens are gone
    assert TokenService(new).verify(fresh).subject == "ana@x"

"""API tokens: JWTs the service signs (HS256) and verifies.

Keys are looked up by the token's `kid` header in a key set, so an external issuer's public keys
(RS256/ES256) can be added beside the service's own secret without touching the callers.
"""

import hashlib
import math
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

import jwt

from domain.roles import ROLE_PERMISSIONS

# The seed's four (domain.roles), and ticket.track: create and update tickets through the
# work-tracker routes (an integration's right).
PERMISSIONS: Final = (*ROLE_PERMISSIONS, "ticket.track")
WILDCARD_ORG: Final = "*"
ISSUER: Final = "soc-ticketing"
SERVICE_KID: Final = "service"
MIN_SECRET_LENGTH: Final = 32
MIN_SECRET_BITS: Final = 128
# Words that mark a value copied from an example instead of generated.
PLACEHOLDERS: Final = ("change", "placeholder", "example", "secret", "password", "default", "replace")
MAX_TTL_S: Final = 30 * 86400
VERIFIED_CACHE_SIZE: Final = 10_000


def secret_problem(secret: str) -> str | None:
    """Why a signing secret must not be used, or None. Anyone who guesses it mints operator tokens
    over every org, so a copied placeholder or a low-entropy string is refused, not warned about."""
    if len(secret) < MIN_SECRET_LENGTH:
        return f"the token secret must be at least {MIN_SECRET_LENGTH} characters"
    lowered = secret.lower()
    if any(word in lowered for word in PLACEHOLDERS):
        return "the token secret looks like a placeholder; generate one (secrets.token_urlsafe(48))"
    if estimated_bits(secret) < MIN_SECRET_BITS:
        return (
            f"the token secret has under {MIN_SECRET_BITS} bits of estimated entropy;"
            " generate one (secrets.token_urlsafe(48))"
        )
    return None


def kid_of(secret: str) -> str:
    """A signing secret's key id: names it without revealing it."""
    return "hs-" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def estimated_bits(text: str) -> float:
    """Shannon entropy of the characters times the length: an upper bound for anything a person
    typed, about right for a random string."""
    n = len(text)
    per_char = -sum(c / n * math.log2(c / n) for c in Counter(text).values())
    return per_char * n


class InvalidToken(Exception):
    """Missing, malformed, expired or badly signed: always a 401, never more detail than needed."""


@dataclass(frozen=True)
class Principal:
    subject: str
    permissions: dict[str, frozenset[str]]  # org id (or "*" for operators) -> permissions
    operator: bool = False
    token_id: str = ""  # a token's jti, an API key's id, a session's id: what revokes it
    api_key: bool = False  # an org API key rather than a user's or a service's token
    source: str = "token"  # where the identity came from: token, api_key, session:<issuer>
    csrf_token: str = ""  # a session's: every write it authorizes must carry it (X-CSRF-Token)

    def has(self, permission: str, oid: str) -> bool:
        perms = self.permissions.get(oid)
        if perms is None and self.operator:
            perms = self.permissions.get(WILDCARD_ORG)
        return perms is not None and permission in perms

    def sees_org(self, oid: str) -> bool:
        return oid in self.permissions or (self.operator and WILDCARD_ORG in self.permissions)


@dataclass(frozen=True)
class VerificationKey:
    key: Any  # a secret for HS*, a public key for RS*/ES*
    algorithms: tuple[str, ...]
    issuer: str


@dataclass
class TokenService:
    signing_secret: str
    keys: dict[str, VerificationKey] = field(default_factory=dict)
    max_ttl_s: int = MAX_TTL_S
    # Secrets rotated out that still verify the tokens they signed (each under its own kid), so a
    # new secret can sign from one deploy on while the old tokens live out their lifetime.
    previous_secrets: tuple[str, ...] = ()
    # token -> (principal, exp): a client sends the same token with every request, and checking
    # the signature and claims again was a tenth of a list request's CPU. The key set is fixed for
    # the process's life, so a token verified once stays valid until its exp.
    _verified: dict[str, tuple[Principal, float]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        problem = secret_problem(self.signing_secret)
        if problem:
            raise ValueError(problem)
        self.keys.setdefault(
            SERVICE_KID, VerificationKey(self.signing_secret, ("HS256",), ISSUER)
        )  # before kids
        for secret in (self.signing_secret, *self.previous_secrets):
            self.keys.setdefault(kid_of(secret), VerificationKey(secret, ("HS256",), ISSUER))

    def mint(
        self,
        subject: str,
        permissions: dict[str, list[str]],
        *,
        ttl_s: int,
        operator: bool = False,
        now: float | None = None,
    ) -> str:
        for oid, perms in permissions.items():
            if oid == WILDCARD_ORG and not operator:
                raise ValueError("the wildcard org '*' is only for operator tokens")
            unknown = set(perms) - set(PERMISSIONS)
            if unknown:
                raise ValueError(f"unknown permissions {sorted(unknown)}; known: {', '.join(PERMISSIONS)}")
        if ttl_s > self.max_ttl_s:
            raise ValueError(f"a token lives at most {self.max_ttl_s} s (TICKETING_TOKEN_MAX_TTL)")
        issued = int(now if now is not None else time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": subject,
            "iat": issued,
            "exp": issued + ttl_s,
            "jti": secrets.token_hex(8),
            "perms": permissions,
        }
        if operator:
            claims["operator"] = True
        return jwt.encode(
            claims, self.signing_secret, algorithm="HS256", headers={"kid": kid_of(self.signing_secret)}
        )

    def verify(self, token: str) -> Principal:
        hit = self._verified.get(token)
        if hit is not None:
            if time.time() <= hit[1]:
                return hit[0]
            del self._verified[token]
        principal, exp = self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, exp)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            kid = jwt.get_unverified_header(token).get("kid", SERVICE_KID)
            key = self.keys.get(kid)
            if key is None:
                raise InvalidToken("unknown signing key")
            claims = jwt.decode(
                token,
                key.key,
                algorithms=list(key.algorithms),
                issuer=key.issuer,
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(type(exc).__name__) from None
        lifetime = claims["exp"] - claims["iat"]
        if not isinstance(lifetime, int | float) or lifetime > self.max_ttl_s:
            raise InvalidToken("lifetime over the cap")  # a stolen long-lived token stays useless
        return _principal(claims), float(claims["exp"])


def _principal(claims: dict[str, Any]) -> Principal:
    subject = claims.get("sub")
    raw = claims.get("perms", {})
    operator = claims.get("operator") is True
    if not isinstance(subject, str) or not subject or len(subject) > 256:
        raise InvalidToken("bad subject")
    if not isinstance(raw, dict) or not all(
        isinstance(oid, str) and isinstance(p, list) and all(isinstance(x, str) for x in p)
        for oid, p in raw.items()
    ):
        raise InvalidToken("bad permissions claim")
    if WILDCARD_ORG in raw and not operator:
        raise InvalidToken("wildcard org without operator")
    return Principal(
        subject=subject,
        permissions={oid: frozenset(p) for oid, p in raw.items()},
        operator=operator,
        token_id=str(claims.get("jti", "")),
    )

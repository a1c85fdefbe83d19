"""The OpenID Connect provider, as the console's sign-in uses it: discovery, the authorization
code flow with PKCE, and the ID token's checks.

JOSE is PyJWT's: the signature through the provider's JWKS (its `PyJWKClient` fetches the key set
again when a token names a key it does not know, which is how a provider's key rotation reaches
us), then `iss`, `aud` (and `azp`), `exp`, `iat`; the nonce is compared here, the state by the
session store that keeps it.
"""

import asyncio
import base64
import functools
import hashlib
import logging
import secrets
import ssl
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt

from services.settings import OidcSettings

log = logging.getLogger(__name__)

# Asymmetric only: `none` and the HS* family (keyed with the client secret) are never accepted.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LEEWAY_S = 30  # clock skew tolerated on exp and iat
TIMEOUT = aiohttp.ClientTimeout(total=10)


class SignInRefused(Exception):
    """The sign-in cannot go on; the message says why, safe to show (no token in it)."""


@dataclass(frozen=True)
class Identity:
    subject: str  # the e-mail if the provider vouches for it, else its subject
    provider_sub: str
    groups: tuple[str, ...]
    id_token: str


def pkce_pair() -> tuple[str, str]:
    """A PKCE verifier and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@dataclass
class OidcProvider:
    settings: OidcSettings
    _discovery: dict[str, Any] | None = None
    _jwks: jwt.PyJWKClient | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @functools.cached_property
    def _ssl_context(self) -> ssl.SSLContext | bool:
        """The CAs the provider's certificate is checked against: the system's unless told (read
        once, not for every call to the provider)."""
        return ssl.create_default_context(cafile=self.settings.cafile) if self.settings.cafile else True

    async def discovery(self) -> dict[str, Any]:
        """The provider's metadata, fetched once (again after a failure); its issuer must be ours."""
        if self._discovery is not None:
            return self._discovery
        async with self._lock:
            if self._discovery is None:
                url = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
                try:
                    async with (
                        aiohttp.ClientSession(timeout=TIMEOUT) as s,
                        s.get(url, ssl=self._ssl_context) as r,
                    ):
                        r.raise_for_status()
                        doc = await r.json(content_type=None)
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    log.warning("OIDC discovery at %s failed: %s", url, type(exc).__name__)
                    raise SignInRefused("the identity provider cannot be reached") from None
                if not isinstance(doc, dict) or doc.get("issuer") != self.settings.issuer:
                    raise SignInRefused("the identity provider's metadata names another issuer")
                for needed in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(doc.get(needed), str):
                        raise SignInRefused(f"the identity provider's metadata has no {needed}")
                context = self._ssl_context
                self._jwks = jwt.PyJWKClient(
                    doc["jwks_uri"],
                    cache_keys=True,
                    ssl_context=context if isinstance(context, ssl.SSLContext) else None,
                )
                self._discovery = doc
        return self._discovery

    async def authorization_url(self, state: str, nonce: str, challenge: str) -> str:
        doc = await self.discovery()
        query = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": self.settings.redirect_url,
            "scope": self.settings.scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        endpoint: str = doc["authorization_endpoint"]
        return endpoint + ("&" if "?" in endpoint else "?") + urllib.parse.urlencode(query)

    async def sign_in(self, code: str, verifier: str, nonce: str) -> Identity:
        """The code exchanged for tokens, the ID token checked, the user's groups read."""
        doc = await self.discovery()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.settings.redirect_url,
                "code_verifier": verifier}  # fmt: skip
        headers: dict[str, str] = {}
        methods = doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        if "client_secret_basic" in methods:
            # RFC 6749 2.3.1: each part form-encoded before Basic
            headers["Authorization"] = aiohttp.encode_basic_auth(
                urllib.parse.quote(self.settings.client_id, safe=""),
                urllib.parse.quote(str(self.settings.client_secret), safe=""),
            )
        else:
            form |= {"client_id": self.settings.client_id, "client_secret": str(self.settings.client_secret)}
        try:
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT) as s,
                s.post(doc["token_endpoint"], data=form, headers=headers, ssl=self._ssl_context) as r,
            ):
                tokens = await r.json(content_type=None)
                if r.status != 200 or not isinstance(tokens, dict):
                    error = tokens.get("error") if isinstance(tokens, dict) else None
                    raise SignInRefused(f"the identity provider refused the code ({error or r.status})")
        except (aiohttp.ClientError, TimeoutError, ValueError):
            raise SignInRefused("the identity provider's token endpoint cannot be reached") from None
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise SignInRefused("the identity provider sent no ID token")
        claims = await self.verify_id_token(id_token, nonce)
        groups = claims.get(self.settings.groups_claim)
        access, userinfo = tokens.get("access_token"), doc.get("userinfo_endpoint")
        if groups is None and isinstance(access, str) and isinstance(userinfo, str):
            info = await self._userinfo(userinfo, access, claims["sub"])
            groups = info.get(self.settings.groups_claim)
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list):
            groups = []
        email = claims.get("email")
        vouched = isinstance(email, str) and email and claims.get("email_verified") is not False
        return Identity(
            subject=email if vouched and isinstance(email, str) else claims["sub"],
            provider_sub=claims["sub"],
            groups=tuple(sorted({g for g in groups if isinstance(g, str) and 0 < len(g) <= 256})),
            id_token=id_token,
        )

    async def verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        await self.discovery()
        assert self._jwks is not None
        try:
            key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, id_token)
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key.key,
                algorithms=list(ALGORITHMS),
                audience=self.settings.client_id,
                issuer=self.settings.issuer,
                leeway=LEEWAY_S,
                options={"require": ["iss", "aud", "exp", "iat", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise SignInRefused("the ID token has expired") from None
        except jwt.InvalidIssuerError:
            raise SignInRefused("the ID token was issued by another issuer") from None
        except jwt.InvalidAudienceError:
            raise SignInRefused("the ID token is for another client") from None
        except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
            raise SignInRefused(f"the ID token is not valid ({type(exc).__name__})") from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.settings.client_id:
            raise SignInRefused("the ID token is for another client")
        if not isinstance(claims.get("nonce"), str) or not secrets.compare_digest(claims["nonce"], nonce):
            raise SignInRefused("the ID token's nonce is not this sign-in's")
        if not isinstance(claims["sub"], str) or not claims["sub"] or len(claims["sub"]) > 256:
            raise SignInRefused("the ID token has no usable subject")
        return claims

    async def _userinfo(self, url: str, access_token: str, sub: str) -> dict[str, Any]:
        try:
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT) as s,
                s.get(url, headers={"Authorization": f"Bearer {access_token}"}, ssl=self._ssl_context) as r,
            ):
                info = await r.json(content_type=None) if r.status == 200 else {}
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return {}
        # OIDC core 5.3.2: a userinfo answer about someone else is not used
        return info if isinstance(info, dict) and info.get("sub") == sub else {}

    async def end_session_url(self, id_token: str | None, after: str) -> str | None:
        """Where the browser goes to sign out at the provider too, if it offers that."""
        try:
            doc = await self.discovery()
        except SignInRefused:
            return None
        endpoint = doc.get("end_session_endpoint")
        if not isinstance(endpoint, str):
            return None
        query = {"client_id": self.settings.client_id, "post_logout_redirect_uri": after}
        if id_token:
            query["id_token_hint"] = id_token
        return endpoint + ("&" if "?" in endpoint else "?") + urllib.parse.urlencode(query)

"""One typed settings object, read from the environment once."""

import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import msgspec

from domain.limits import LOG_SHARDS_MAX
from domain.placement import parse_placement

Environment = Literal["test", "dev", "prod"]


class KafkaClientSettings(msgspec.Struct, frozen=True):
    """Consumer-group timing. Short sessions make the dev broker rebalance in about a second;
    real Kafka refuses sessions under 6 s by default (see infra-notes)."""

    session_timeout_ms: int
    heartbeat_interval_ms: int
    rebalance_timeout_ms: int


KAFKA_CLIENT_PROFILES: dict[Environment, KafkaClientSettings] = {
    "test": KafkaClientSettings(2000, 300, 2000),
    "dev": KafkaClientSettings(6000, 500, 6000),
    "prod": KafkaClientSettings(30000, 3000, 60000),
}


class Redacted(str):
    """A secret that prints as asterisks, so a settings object in a log line or traceback leaks nothing."""

    def __repr__(self) -> str:
        return "'***'"


KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaSecurity(msgspec.Struct, frozen=True):
    """How every Kafka client of the service connects: managed Kafka wants TLS and SASL."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Redacted | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @classmethod
    def from_env(cls, e: Mapping[str, str]) -> "KafkaSecurity":
        protocol = e.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
        if protocol not in KAFKA_PROTOCOLS:
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(KAFKA_PROTOCOLS)} (got {protocol!r})"
            )
        password = e.get("KAFKA_SASL_PASSWORD")
        if not password and e.get("KAFKA_SASL_PASSWORD_FILE"):
            password = Path(e["KAFKA_SASL_PASSWORD_FILE"]).read_text().strip()
        security = cls(
            protocol=protocol,
            sasl_mechanism=e.get(
                "KAFKA_SASL_MECHANISM", "PLAIN" if protocol.startswith("SASL_") else ""
            ).upper()
            or None,
            sasl_username=e.get("KAFKA_SASL_USERNAME") or None,
            sasl_password=Redacted(password) if password else None,
            ssl_cafile=e.get("KAFKA_SSL_CAFILE") or None,
            ssl_certfile=e.get("KAFKA_SSL_CERTFILE") or None,
            ssl_keyfile=e.get("KAFKA_SSL_KEYFILE") or None,
        )
        if security.uses_sasl:
            if security.sasl_mechanism not in SASL_MECHANISMS:
                raise ValueError(f"KAFKA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}")
            if not security.sasl_username or not security.sasl_password:
                raise ValueError(
                    f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and"
                    " KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE)"
                )
        if not security.uses_tls and (security.ssl_cafile or security.ssl_certfile or security.ssl_keyfile):
            raise ValueError(
                f"KAFKA_SSL_* files are set but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS"
            )
        if bool(security.ssl_certfile) != bool(security.ssl_keyfile):
            raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together (a client certificate)")
        return security


SMTP_SCHEMES = {"smtp": (False, None), "smtp+starttls": (False, True), "smtps": (True, False)}


class SmtpSettings(msgspec.Struct, frozen=True):
    """The mail server notifications go through: `TICKETING_SMTP_URL` is `smtp://host:port`
    (STARTTLS when the server offers it), `smtp+starttls://` (STARTTLS required) or `smtps://`
    (TLS from the first byte), with `user:password@` for AUTH or the password in
    `TICKETING_SMTP_PASSWORD_FILE`; `TICKETING_SMTP_FROM` is the sender."""

    host: str
    port: int
    use_tls: bool
    start_tls: bool | None  # None: when the server offers it
    username: str | None
    password: Redacted | None
    sender: str
    cafile: str | None = None  # TICKETING_SMTP_CAFILE: CAs the server's certificate is checked against

    @classmethod
    def from_env(cls, e: Mapping[str, str]) -> "SmtpSettings | None":
        url = e.get("TICKETING_SMTP_URL")
        if not url:
            return None
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError("TICKETING_SMTP_URL is not a URL (smtp://[user:password@]host[:port])") from None
        if parts.scheme not in SMTP_SCHEMES or not parts.hostname:
            raise ValueError("TICKETING_SMTP_URL must be smtp://, smtp+starttls:// or smtps:// with a host")
        use_tls, start_tls = SMTP_SCHEMES[parts.scheme]
        password = urllib.parse.unquote(parts.password) if parts.password else None
        if e.get("TICKETING_SMTP_PASSWORD_FILE"):
            password = Path(e["TICKETING_SMTP_PASSWORD_FILE"]).read_text().strip()
        return cls(
            host=parts.hostname,
            port=port or (465 if use_tls else 587 if start_tls else 25),
            use_tls=use_tls,
            start_tls=start_tls,
            username=urllib.parse.unquote(parts.username) if parts.username else None,
            password=Redacted(password) if password else None,
            sender=e.get("TICKETING_SMTP_FROM", "SOC ticketing <ticketing@localhost>"),
            cafile=e.get("TICKETING_SMTP_CAFILE") or None,
        )


class S3Settings(msgspec.Struct, frozen=True):
    """The evidence store as an S3-compatible object store (AWS S3, MinIO, Ceph RGW, ...) instead of
    the local folder: `TICKETING_EVIDENCE_S3_BUCKET` turns it on. Credentials are
    `TICKETING_EVIDENCE_S3_ACCESS_KEY_ID` and the secret (or its `_FILE`), else the AWS SDK's own
    chain (AWS_* variables, web identity, instance profile)."""

    bucket: str
    endpoint_url: str | None  # None: AWS itself
    region: str
    prefix: str  # every key under it ("" or ending in "/")
    access_key_id: str | None
    secret_access_key: Redacted | None

    @classmethod
    def from_env(cls, e: Mapping[str, str]) -> "S3Settings | None":
        bucket = e.get("TICKETING_EVIDENCE_S3_BUCKET")
        if not bucket:
            return None
        endpoint = e.get("TICKETING_EVIDENCE_S3_ENDPOINT") or None
        if endpoint is not None and urllib.parse.urlsplit(endpoint).scheme not in ("http", "https"):
            raise ValueError("TICKETING_EVIDENCE_S3_ENDPOINT must be an http:// or https:// URL")
        secret = e.get("TICKETING_EVIDENCE_S3_SECRET_ACCESS_KEY")
        if e.get("TICKETING_EVIDENCE_S3_SECRET_ACCESS_KEY_FILE"):
            secret = Path(e["TICKETING_EVIDENCE_S3_SECRET_ACCESS_KEY_FILE"]).read_text().strip()
        key_id = e.get("TICKETING_EVIDENCE_S3_ACCESS_KEY_ID") or None
        if (key_id is None) != (not secret):
            raise ValueError(
                "TICKETING_EVIDENCE_S3_ACCESS_KEY_ID and TICKETING_EVIDENCE_S3_SECRET_ACCESS_KEY go together"
            )
        prefix = e.get("TICKETING_EVIDENCE_S3_PREFIX", "").strip("/")
        return cls(
            bucket=bucket,
            endpoint_url=endpoint,
            region=e.get("TICKETING_EVIDENCE_S3_REGION", "us-east-1"),
            prefix=prefix + "/" if prefix else "",
            access_key_id=key_id,
            secret_access_key=Redacted(secret) if secret else None,
        )


class OidcSettings(msgspec.Struct, frozen=True):
    """Single sign-on for the console (docs/access-control.md): the OpenID Connect provider
    (`TICKETING_OIDC_ISSUER`, its `.well-known/openid-configuration` says the rest), this service's
    client at it, where the provider sends the browser back, and the sessions it opens."""

    issuer: str
    client_id: str
    client_secret: Redacted
    redirect_url: str  # https://<console>/auth/callback, as registered at the provider
    scopes: str  # asked for: openid, and what carries the e-mail and the groups
    groups_claim: str  # the ID token's (or userinfo's) claim that lists the user's groups
    operator_group: str | None  # its members are operators (every org); never from an org's config
    idle_timeout_s: int  # a session unused this long ends
    absolute_timeout_s: int  # and every session ends this long after sign-in
    cookie_secure: bool  # the cookie only over https (off only for a dev stack on http)
    cafile: str | None = None  # TICKETING_OIDC_CAFILE: CAs the provider's certificate is checked against

    @classmethod
    def from_env(cls, e: Mapping[str, str], environment: str) -> "OidcSettings | None":
        issuer = e.get("TICKETING_OIDC_ISSUER")
        if not issuer:
            return None
        secret = e.get("TICKETING_OIDC_CLIENT_SECRET") or ""
        if e.get("TICKETING_OIDC_CLIENT_SECRET_FILE"):
            secret = Path(e["TICKETING_OIDC_CLIENT_SECRET_FILE"]).read_text().strip()
        missing = [
            name
            for name, value in (
                ("TICKETING_OIDC_CLIENT_ID", e.get("TICKETING_OIDC_CLIENT_ID")),
                ("TICKETING_OIDC_CLIENT_SECRET", secret),
                ("TICKETING_OIDC_REDIRECT_URL", e.get("TICKETING_OIDC_REDIRECT_URL")),
            )
            if not value
        ]
        if missing:
            raise ValueError(f"TICKETING_OIDC_ISSUER is set: {', '.join(missing)} must be set too")
        for name in ("TICKETING_OIDC_ISSUER", "TICKETING_OIDC_REDIRECT_URL"):
            if not re.fullmatch(r"https?://[!-~]+", e[name]):
                raise ValueError(f"{name} must be an http(s) URL")
        secure = e.get("TICKETING_SESSION_COOKIE_SECURE", "false" if environment != "prod" else "true")
        if secure not in ("true", "false"):
            raise ValueError("TICKETING_SESSION_COOKIE_SECURE must be true or false")
        return cls(
            issuer=issuer,
            client_id=e["TICKETING_OIDC_CLIENT_ID"],
            client_secret=Redacted(secret),
            redirect_url=e["TICKETING_OIDC_REDIRECT_URL"],
            scopes=e.get("TICKETING_OIDC_SCOPES", "openid email profile groups"),
            groups_claim=e.get("TICKETING_OIDC_GROUPS_CLAIM", "groups"),
            operator_group=e.get("TICKETING_OIDC_OPERATOR_GROUP") or None,
            idle_timeout_s=parse_ttl(e.get("TICKETING_SESSION_IDLE_TIMEOUT", "30m")),
            absolute_timeout_s=parse_ttl(e.get("TICKETING_SESSION_ABSOLUTE_TIMEOUT", "12h")),
            cookie_secure=secure == "true",
            cafile=e.get("TICKETING_OIDC_CAFILE") or None,
        )


class Topics(msgspec.Struct, frozen=True):
    detections: str
    deadletter: str
    ticket_events: str

    @classmethod
    def with_prefix(cls, prefix: str) -> "Topics":
        return cls(f"{prefix}detections", f"{prefix}detections.deadletter", f"{prefix}ticket-events")


class Settings(msgspec.Struct, frozen=True):
    environment: Environment
    kafka_bootstrap_servers: str | None  # None: start the embedded broker (dev/test only)
    kafka_security: KafkaSecurity
    database_url: str | None  # None: start the embedded PostgreSQL (dev/test only)
    migration_database_url: str | None  # the schema owner's DSN, for migrate and rebuild only
    db_runtime_role: str | None  # the role the migrate step grants the services' rights to
    state_dir: Path
    topics: Topics
    detections_partitions: int
    replication_factor: int
    ingest_group: str
    ingest_batch_size: int
    ingest_batch_within_s: float
    ingest_writers: int
    log_shards: int  # the event log's shards (applied by `migrate`; the database's count rules)
    placement: dict[int, str]  # shard -> the database holding it, when not DATABASE_URL's (domain.placement)
    migration_placement: dict[int, str]  # the same databases as their schema owner, for migrate and rebuild
    ingest_fetch_max_wait_ms: int
    ingest_buffer: int
    default_oid: str | None
    api_host: str
    api_port: int
    db_pool_max: int
    jwt_secret: str | None
    rate_limit_per_s: float
    rate_limit_burst: int
    archive_dir: Path
    evidence_dir: Path  # the evidence store: uploaded artifact files, per org, under their SHA-256
    evidence_s3: S3Settings | None  # set: the evidence store is this bucket, not evidence_dir
    log_level: str
    token_max_ttl_s: int
    api_statement_timeout_ms: int
    db_acquire_timeout_s: float
    ticket_url_template: str  # a ticket's stable URL in outbound messages: `$ticket_id`, `$oid`
    log_format: Literal["auto", "json", "text"]  # auto: text on a terminal, else JSON lines
    metrics_port: int | None  # this process's Prometheus listener (the API serves /metrics itself)
    metrics_host: str
    egress_allow: tuple[str, ...]  # non-public addresses, networks or hosts outbound URLs may reach
    jwt_previous_secrets: tuple[str, ...]  # rotated-out signing secrets that still verify
    smtp: SmtpSettings | None  # None: e-mail notifications are not sent (their deliveries wait)
    streams_per_principal: int  # open live streams (GET /api/v1/stream) one token may hold
    oidc: OidcSettings | None  # None: no single sign-on (tokens only)

    @property
    def kafka(self) -> KafkaClientSettings:
        return KAFKA_CLIENT_PROFILES[self.environment]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        e = os.environ if env is None else env
        # Production unless told otherwise: a forgotten variable must not mean the dev secret.
        environment = e.get("TICKETING_ENV", "prod")
        if environment not in KAFKA_CLIENT_PROFILES:
            raise ValueError(f"TICKETING_ENV must be one of test, dev, prod (got {environment!r})")
        prefix = e.get("TICKETING_TOPIC_PREFIX", "")
        state_dir = Path(e.get("TICKETING_STATE_DIR", ".state")).resolve()
        default_replication = "3" if environment == "prod" else "1"
        return cls(
            environment=environment,
            kafka_bootstrap_servers=e.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            kafka_security=KafkaSecurity.from_env(e),
            database_url=e.get("DATABASE_URL") or None,
            migration_database_url=e.get("TICKETING_MIGRATION_DATABASE_URL") or e.get("DATABASE_URL") or None,
            db_runtime_role=e.get("TICKETING_DB_RUNTIME_ROLE") or None,
            state_dir=state_dir,
            topics=Topics.with_prefix(prefix),
            detections_partitions=int(e.get("TICKETING_DETECTIONS_PARTITIONS", "8")),
            replication_factor=int(e.get("TICKETING_REPLICATION_FACTOR", default_replication)),
            ingest_group=e.get("TICKETING_INGEST_GROUP", f"{prefix}ticketing-ingest"),
            ingest_batch_size=int(e.get("TICKETING_INGEST_BATCH_SIZE", "1000")),
            ingest_batch_within_s=float(e.get("TICKETING_INGEST_BATCH_WITHIN_S", "0.05")),
            ingest_writers=max(1, int(e.get("TICKETING_INGEST_WRITERS", "2"))),
            log_shards=(shards := _log_shards(e.get("TICKETING_LOG_SHARDS", "1"))),
            placement=parse_placement(e.get("TICKETING_PLACEMENT", ""), shards),
            migration_placement=parse_placement(
                e.get("TICKETING_MIGRATION_PLACEMENT") or e.get("TICKETING_PLACEMENT", ""),
                shards,
                "TICKETING_MIGRATION_PLACEMENT",
            ),
            ingest_fetch_max_wait_ms=max(50, int(e.get("TICKETING_INGEST_FETCH_MAX_WAIT_MS", "100"))),
            ingest_buffer=max(1024, int(e.get("TICKETING_INGEST_BUFFER", "32768"))),
            default_oid=e.get("TICKETING_DEFAULT_OID") or None,
            api_host=e.get("TICKETING_API_HOST", "127.0.0.1"),
            api_port=int(e.get("TICKETING_API_PORT", "8080")),
            db_pool_max=int(e.get("TICKETING_DB_POOL_MAX", "10")),
            jwt_secret=_secret(e, state_dir, environment),
            rate_limit_per_s=float(e.get("TICKETING_RATE_LIMIT_PER_S", "20")),
            rate_limit_burst=int(e.get("TICKETING_RATE_LIMIT_BURST", "50")),
            archive_dir=Path(e.get("TICKETING_ARCHIVE_DIR") or state_dir / "archive").resolve(),
            evidence_dir=Path(e.get("TICKETING_EVIDENCE_DIR") or state_dir / "evidence").resolve(),
            evidence_s3=S3Settings.from_env(e),
            log_level=e.get("TICKETING_LOG_LEVEL", "INFO").upper(),
            token_max_ttl_s=parse_ttl(e.get("TICKETING_TOKEN_MAX_TTL", "30d")),
            api_statement_timeout_ms=max(100, int(e.get("TICKETING_API_STATEMENT_TIMEOUT_MS", "15000"))),
            db_acquire_timeout_s=max(0.1, float(e.get("TICKETING_DB_ACQUIRE_TIMEOUT_S", "5"))),
            ticket_url_template=_ticket_url_template(e),
            log_format=_log_format(e.get("TICKETING_LOG_FORMAT", "auto")),
            metrics_port=int(e.get("TICKETING_METRICS_PORT") or 0) or None,
            metrics_host=e.get("TICKETING_METRICS_HOST", "127.0.0.1"),
            egress_allow=_listed(e, "TICKETING_EGRESS_ALLOW"),
            jwt_previous_secrets=_listed(e, "TICKETING_JWT_PREVIOUS_SECRETS"),
            smtp=SmtpSettings.from_env(e),
            streams_per_principal=max(1, int(e.get("TICKETING_STREAM_MAX_PER_TOKEN", "5"))),
            oidc=OidcSettings.from_env(e, environment),
        )

    def __post_init__(self) -> None:
        if set(self.placement) != set(self.migration_placement):
            raise ValueError("TICKETING_MIGRATION_PLACEMENT must place the shards TICKETING_PLACEMENT does")

    def shard_databases(self) -> list[str]:
        """Each log shard's database URL, in shard order (DATABASE_URL where the placement names none)."""
        return [self.placement.get(s, self.database_url or "") for s in range(self.log_shards)]

    def databases(self) -> list[str]:
        """Every database of the placement, the home one (DATABASE_URL) first."""
        return list(dict.fromkeys([self.database_url or "", *self.shard_databases()]))

    def require_secret(self) -> str:
        if not self.jwt_secret:
            raise RuntimeError("TICKETING_JWT_SECRET (or TICKETING_JWT_SECRET_FILE) must be set")
        return self.jwt_secret

    def as_owner(self) -> "Settings":
        """The same settings on the schema owner's connection (migrate, rebuild)."""
        return msgspec.structs.replace(
            self, database_url=self.migration_database_url, placement=self.migration_placement
        )

    def require_infra(self) -> tuple[str, str]:
        """The services themselves never start infrastructure: they need both addresses."""
        if not self.kafka_bootstrap_servers or not self.database_url:
            raise RuntimeError("KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL must be set")
        return self.kafka_bootstrap_servers, self.database_url


DEV_SECRET_FILE = "jwt-secret"


def _log_shards(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= LOG_SHARDS_MAX:
        raise ValueError(
            f"TICKETING_LOG_SHARDS must be a whole number from 1 to {LOG_SHARDS_MAX} (got {raw!r})"
        )
    return int(raw)


def _secret(e: Mapping[str, str], state_dir: Path, environment: str) -> str | None:
    """The token secret: from the environment, a file (e.g. a mounted k8s secret) or, in dev and
    test only, the one `make run` keeps in the state folder."""
    if e.get("TICKETING_JWT_SECRET"):
        return e["TICKETING_JWT_SECRET"]
    path = e.get("TICKETING_JWT_SECRET_FILE")
    if path:
        return Path(path).read_text().strip()
    dev_file = state_dir / DEV_SECRET_FILE
    if environment != "prod" and dev_file.exists():
        return dev_file.read_text().strip()
    return None


def parse_ttl(text: str) -> int:
    """`90s`, `15m`, `8h`, `30d` (or plain seconds) -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    try:
        seconds = int(value[:-1]) * units[value[-1]] if value and value[-1] in units else int(value)
    except (ValueError, KeyError):
        raise ValueError(f"cannot read a duration from {text!r}: use e.g. 900s, 15m, 8h, 30d") from None
    if seconds <= 0:
        raise ValueError("the duration must be positive")
    return seconds


def _ticket_url_template(e: Mapping[str, str]) -> str:
    """The console's ticket page on the API's host unless the operator names the public URL."""
    template = e.get("TICKETING_TICKET_URL_TEMPLATE") or (
        f"http://{e.get('TICKETING_API_HOST', '127.0.0.1')}:{e.get('TICKETING_API_PORT', '8080')}"
        "/tickets/$ticket_id?oid=$oid"
    )
    if not re.fullmatch(r"https?://[!-~]*\$ticket_id[!-~]*", template):
        raise ValueError("TICKETING_TICKET_URL_TEMPLATE must be an http(s) URL containing $ticket_id")
    return template


def _log_format(value: str) -> Literal["auto", "json", "text"]:
    if value not in ("auto", "json", "text"):
        raise ValueError(f"TICKETING_LOG_FORMAT must be auto, json or text (got {value!r})")
    return value  # type: ignore[return-value]


def _listed(e: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in e.get(name, "").split(",") if x.strip())

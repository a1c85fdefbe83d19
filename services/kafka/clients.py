"""Connection options for every Kafka client of the service (aiokafka's and faust's), from the one
KafkaSecurity in settings: a client built any other way would ignore TLS and SASL."""

import ssl
from typing import Any

import faust
from aiokafka.helpers import create_ssl_context
from faust.types.auth import CredentialsT

from services.settings import Settings


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    security = settings.kafka_security
    if not security.uses_tls:
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=security.ssl_cafile, certfile=security.ssl_certfile, keyfile=security.ssl_keyfile
    )
    return context


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
    bootstrap = settings.kafka_bootstrap_servers
    if not bootstrap:
        raise RuntimeError("KAFKA_BOOTSTRAP_SERVERS must be set")
    security = settings.kafka_security
    options: dict[str, Any] = {"bootstrap_servers": bootstrap, "security_protocol": security.protocol}
    context = _ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if security.uses_sasl:
        options["sasl_mechanism"] = security.sasl_mechanism
        options["sasl_plain_username"] = security.sasl_username
        options["sasl_plain_password"] = str(security.sasl_password)
    return options


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """The same, as faust's `broker_credentials`."""
    security = settings.kafka_security
    context = _ssl_context(settings)
    if security.uses_sasl:
        return faust.SASLCredentials(
            username=security.sasl_username,
            password=str(security.sasl_password),
            mechanism=security.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None

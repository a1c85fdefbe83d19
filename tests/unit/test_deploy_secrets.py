"""The shipped deploy files hold no secret and hand the token secret to the API alone: anyone who
knows the signing secret mints operator tokens over every org."""

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from services.devstack.supervisor import DEV_TOKEN_TTL_S

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
REQUIRED = re.compile(r"^\$\{[A-Z_]+:\?[^}]*\}$")  # ${VAR:?message}: no default, compose refuses to start


def compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return compose


def manifests() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "ticketing.yaml").read_text()) if d]


def test_compose_gives_the_jwt_secret_to_the_api_only_and_without_a_default() -> None:
    services = compose()["services"]
    holders = {
        name for name, svc in services.items() if "TICKETING_JWT_SECRET" in (svc.get("environment") or {})
    }
    assert holders == {"api"}
    assert REQUIRED.match(services["api"]["environment"]["TICKETING_JWT_SECRET"])


def test_compose_holds_no_literal_password_and_the_owner_dsn_only_in_migrate() -> None:
    services = compose()["services"]
    assert REQUIRED.match(services["postgres"]["environment"]["POSTGRES_PASSWORD"])
    owners = set()
    for name, svc in services.items():
        env = svc.get("environment") or {}
        if "DATABASE_URL" in env:
            assert env["DATABASE_URL"].startswith(
                "postgresql://ticketing_runtime:${TICKETING_DB_RUNTIME_PASSWORD:?"
            ), name
        if "TICKETING_MIGRATION_DATABASE_URL" in env:
            assert "${TICKETING_DB_PASSWORD:?" in env["TICKETING_MIGRATION_DATABASE_URL"]
            owners.add(name)
    assert owners == {"migrate"}


def test_compose_publishes_ports_on_loopback_only() -> None:
    for name, svc in compose()["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_k8s_manifests_reference_secrets_and_never_hold_one() -> None:
    docs = manifests()
    assert not [d for d in docs if d["kind"] == "Secret"]
    jwt_holders, owners = set(), set()
    for d in docs:
        if d["kind"] not in ("Deployment", "Job"):
            continue
        for container in d["spec"]["template"]["spec"]["containers"]:
            assert all("secretRef" not in src for src in container.get("envFrom", [])), d["metadata"]["name"]
            for var in container.get("env", []):
                if var["name"] in (
                    "DATABASE_URL",
                    "TICKETING_JWT_SECRET",
                    "TICKETING_MIGRATION_DATABASE_URL",
                ):
                    assert "value" not in var and var["valueFrom"]["secretKeyRef"]["name"] == "ticketing"
                if var["name"] == "TICKETING_JWT_SECRET":
                    jwt_holders.add(d["metadata"]["name"])
                if var["name"] == "TICKETING_MIGRATION_DATABASE_URL":
                    owners.add(d["metadata"]["name"])
    assert jwt_holders == {"ticketing-api"}
    assert owners == {"ticketing-migrate"}


def test_the_dev_token_lasts_a_working_day() -> None:
    assert DEV_TOKEN_TTL_S == 8 * 3600


def test_k8s_manifests_are_valid_kubernetes_objects() -> None:
    """Strict validation against the published Kubernetes schemas (no cluster runs here)."""
    for doc in manifests():
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_k8s_manifests_apply_with_the_secret_their_header_creates() -> None:
    """Every secret key a manifest refers to is one the documented `kubectl create secret` gives,
    and the Secret that command makes is itself a valid object."""
    text = (DEPLOY / "k8s" / "ticketing.yaml").read_text()
    documented = set(re.findall(r"--from-literal=([A-Z_]+)=", text))
    referenced = {
        (ref["name"], ref["key"])
        for d in manifests()
        if d["kind"] in ("Deployment", "Job")
        for c in d["spec"]["template"]["spec"]["containers"]
        for var in c.get("env", [])
        if (ref := var.get("valueFrom", {}).get("secretKeyRef"))
    }
    assert referenced == {("ticketing", key) for key in documented}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ticketing"},
              "stringData": dict.fromkeys(documented, "x")}  # fmt: skip
    kubernetes_validate.validate(secret, kubernetes_validate.latest_version(), strict=True)

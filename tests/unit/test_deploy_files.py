"""The deploy files, proven as far as a machine without a container engine can: the compose file
against the Compose specification, the monitoring files against the metrics the code exports and
the runbooks the docs hold, and every variable they set against the settings the code reads."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_spec import PyCompose
from prometheus_client import REGISTRY

import services.metrics  # noqa: F401  (registers the metrics)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# Variables a deploy file sets for something other than our code (the images of Kafka, PostgreSQL,
# Grafana and the runtime role's init script).
NOT_OURS = re.compile(r"^(KAFKA_(?!BOOTSTRAP_SERVERS)|POSTGRES_|GF_|TICKETING_DB_RUNTIME_PASSWORD$)")


def compose() -> dict[str, Any]:
    """As Compose reads it: YAML merge keys resolved."""
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return compose


def manifests() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "ticketing.yaml").read_text()) if d]


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported_metrics() -> set[str]:
    """The series names the code's metrics produce (labelled ones too, before any label is used)."""
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        if family.name.startswith("ticketing_")
        for suffix in SUFFIXES[family.type]
    }


def settings_variables() -> set[str]:
    source = (ROOT / "services" / "settings.py").read_text()
    return set(re.findall(r"""e\.get\(\s*["']([A-Z][A-Z0-9_]+)["']""", source)) | set(
        re.findall(r"""e\[["']([A-Z][A-Z0-9_]+)["']\]""", source)
    )


def test_the_compose_file_is_a_valid_compose_file() -> None:
    PyCompose.from_json(json.dumps(compose()))  # raises on any departure from the specification


@pytest.mark.parametrize(
    ("path", "value"),
    [(("services", "ingest", "restart"), "sometimes"), (("services", "migrate", "comand"), ["migrate"])],
)
def test_the_compose_validation_catches_a_mistake(path: tuple[str, ...], value: object) -> None:
    doc = compose()
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ValueError):
        PyCompose.from_json(json.dumps(doc))


def test_every_variable_the_deploy_files_set_is_one_the_code_reads() -> None:
    known = settings_variables()
    set_by_compose = {k for s in compose()["services"].values() for k in (s.get("environment") or {})}
    set_by_k8s: set[str] = set()
    for doc in manifests():
        if doc["kind"] == "ConfigMap":
            set_by_k8s |= set(doc["data"])
        for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            set_by_k8s |= {e["name"] for e in container.get("env", [])}
    ours = {v for v in set_by_compose | set_by_k8s if not NOT_OURS.match(v)}
    assert ours - known == set(), "set in deploy/ but read by nothing"
    documented = (ROOT / "docs" / "configuration.md").read_text()
    assert {v for v in known if f"`{v}`" not in documented and v not in documented} == set(), (
        "read but undocumented"
    )


def test_every_process_exposes_metrics_where_prometheus_scrapes_it() -> None:
    services = compose()["services"]
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    for name in ("ingest", "relay", "projector", "scheduler"):
        env = services[name]["environment"]
        assert env["TICKETING_METRICS_HOST"] == "0.0.0.0"
        assert f"{name}:{env['TICKETING_METRICS_PORT']}" in targets
    assert "api:8080" in targets


def test_alerts_and_dashboard_use_metrics_that_exist_and_every_alert_has_a_runbook() -> None:
    exported = exported_metrics()
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    runbooks = (ROOT / "docs" / "operations.md").read_text().lower()
    expressions = [r["expr"] for r in rules]
    for rule in rules:
        assert {"alert", "expr", "for", "labels", "annotations"} <= set(rule), rule
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert f"### {anchor}" in runbooks, f"no runbook for {rule['alert']}"
    dashboard = json.loads((DEPLOY / "grafana" / "ticketing-dashboard.json").read_text())
    expressions += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for expr in expressions:
        used = set(re.findall(r"\bticketing_[a-z_]+", expr))
        assert used <= exported, (expr, used - exported)
        assert used or expr.startswith("up{"), expr
    for name in ("TicketingIngestStalled", "TicketingConsumerLagGrowing", "TicketingProjectorBehind",
                 "TicketingDeadLettersRising", "TicketingDeliveryBacklog", "TicketingSlaBreachRate"):  # fmt: skip
        assert name in {r["alert"] for r in rules}


def test_the_kubernetes_manifests_probe_limit_and_protect_every_process() -> None:
    docs = manifests()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {
        f"ticketing-{p}" for p in ("ingest", "relay", "projector", "scheduler", "api")
    }
    for name, d in deployments.items():
        [container] = d["spec"]["template"]["spec"]["containers"]
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"], name
        assert container.get("livenessProbe") and container.get("readinessProbe"), name
    api = deployments["ticketing-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    budgets = {
        d["spec"]["selector"]["matchLabels"]["app"] for d in docs if d["kind"] == "PodDisruptionBudget"
    }
    assert {"ticketing-api", "ticketing-ingest"} <= budgets
    assert any(d["kind"] == "Job" for d in docs)

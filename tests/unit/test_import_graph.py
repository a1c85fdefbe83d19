"""The house rules, read from the source: no import circle, `domain/` pure, and the product never
importing the benchmarks. Every import counts, including those inside functions: a lazy import
still ties two modules together."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("domain", "services", "projections")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(*roots: str) -> dict[str, Path]:
    return {module_name(p): p for root in roots for p in sorted((ROOT / root).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The known modules `name` imports; `from package import module` names the module itself."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m in known and m != name}


def graph(*roots: str) -> dict[str, set[str]]:
    found = modules(*roots)
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_anywhere() -> None:
    assert cycles(graph(*PRODUCT, "tests")) == []


def test_domain_imports_nothing_from_the_rest() -> None:
    offending = {
        (name, dep)
        for name, deps in graph(*PRODUCT).items()
        if name.startswith("domain")
        for dep in deps
        if not dep.startswith("domain")
    }
    assert offending == set()


def test_the_product_does_not_import_the_benchmarks_or_tests() -> None:
    edges = graph(*PRODUCT, "tests")
    offending = {
        (name, dep)
        for name, deps in edges.items()
        if name.split(".")[0] in PRODUCT
        for dep in deps
        if dep.split(".")[0] == "tests"
    }
    assert offending == set()


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"a"}}, [["a"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_cycles_finds_what_it_should(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(edges) == expected


def test_imports_of_sees_lazy_and_from_package_imports(tmp_path: Path) -> None:
    source = ROOT / "services" / "cli.py"
    deps = imports_of("services.cli", source, set(modules(*PRODUCT)))
    assert "services.api.main" in deps  # imported inside a function
    assert "services.bootstrap" in deps


# --- Layers: each process is a sub-package of services/ that no other part imports -------------

PROCESSES = (
    "services.api",
    "services.ingest",
    "services.projector",
    "services.scheduler",
    "services.outbound",
)
COMPOSERS = ("services.cli", "services.devstack")  # start the processes; nothing imports them


def package_of(module: str, packages: tuple[str, ...]) -> str | None:
    return next((p for p in packages if module == p or module.startswith(p + ".")), None)


def layer_violations(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Imports that break the floors: a process importing another process, anything below the
    processes importing a process or a composer, projections importing more than the domain and
    the event store, the domain importing anything but itself."""
    found = set()
    for name, deps in edges.items():
        mine = package_of(name, PROCESSES)
        for dep in deps:
            theirs = package_of(dep, PROCESSES)
            across = mine is not None and theirs is not None and theirs != mine
            shared = mine is None and package_of(name, COMPOSERS) is None
            if across or (shared and (theirs is not None or package_of(dep, COMPOSERS) is not None)):
                found.add((name, dep))
            if name.startswith("domain") and not dep.startswith("domain"):
                found.add((name, dep))
            if name.startswith("projections") and not dep.startswith(
                ("domain", "projections", "services.eventstore")
            ):
                found.add((name, dep))
    return found


def test_the_floors_hold() -> None:
    assert layer_violations(graph(*PRODUCT)) == set()


@pytest.mark.parametrize(
    "edge",
    [
        ("services.api.config", "services.outbound.webhooks"),  # a process importing another
        ("services.commands.org_purge", "services.scheduler.retention"),  # a shared piece importing a process
        ("services.bootstrap", "services.api.ratelimit"),
        ("services.eventstore.postgres", "services.cli"),  # anything importing a composer
        ("projections.tickets", "services.commands.handlers"),  # projections above the event store
        ("domain.intake", "services.commands.intake"),  # the domain importing anything else
    ],
)
def test_a_broken_floor_is_found(edge: tuple[str, str]) -> None:
    edges = graph(*PRODUCT)
    edges[edge[0]] = {*edges.get(edge[0], set()), edge[1]}
    assert edge in layer_violations(edges)


# --- One place for each rule --------------------------------------------------------------------

# name -> the only product modules that may use it (its definition's module included)
ONE_PLACE = {
    "severity_for": {"domain.severity", "domain.intake"},  # severity
    "ticket_id_for_detection": {"domain.intake"},  # ticket ids
    "TICKET_NAMESPACE": {"domain.intake"},
    "org_tombstones": {"services.commands.intake", "services.commands.org_purge"},  # the tombstone check
}


def uses(source: str) -> set[str]:
    """The ONE_PLACE names a module's code names: identifiers, imported names and string text."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.alias):
            found.add(node.name.rpartition(".")[2])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.update(n for n in ONE_PLACE if n in node.value)
    return found & set(ONE_PLACE)


def rule_violations(sources: dict[str, str]) -> set[tuple[str, str]]:
    return {
        (module, name)
        for module, source in sources.items()
        for name in uses(source)
        if module not in ONE_PLACE[name]
    }


def test_severity_ticket_ids_and_the_tombstone_check_are_decided_in_one_place() -> None:
    sources = {name: path.read_text() for name, path in modules(*PRODUCT).items()}
    assert rule_violations(sources) == set()
    assert all(any(name in uses(sources[m]) for m in where) for name, where in ONE_PLACE.items())


@pytest.mark.parametrize(
    "source",
    [
        "from domain.severity import severity_for\nseverity_for(3)",
        "from domain import severity\nseverity.severity_for(3)",
        "from domain.intake import ticket_id_for_detection as tid",
        "import uuid\nuuid.uuid5(intake.TICKET_NAMESPACE, 'x')",
        "SQL = 'SELECT 1 FROM org_tombstones WHERE oid = $1'",
    ],
)
def test_a_second_place_for_a_rule_is_found(source: str) -> None:
    assert rule_violations({"services.api.extension": source}) != set()

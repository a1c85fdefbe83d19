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

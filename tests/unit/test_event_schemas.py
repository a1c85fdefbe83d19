"""Stored events outlive the code that wrote them: one stored document per event type and schema
version is kept here (tests/fixtures/events/v<N>/<type>.json), and each must still decode, upcast
where its version is old. A change to an event that old documents would not survive fails here."""

import typing
from pathlib import Path

import msgspec
import pytest

from domain import events as ev
from domain import schema
from projections.tickets import SQL_READS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
TYPES = sorted(t.__struct_config__.tag for t in typing.get_args(ev.AnyEvent))
STORED = sorted((int(p.parent.name[1:]), p.stem, p) for p in FIXTURES.glob("v*/*.json"))


def test_every_type_has_a_stored_document_of_every_version() -> None:
    have = {(version, kind) for version, kind, _ in STORED}
    wanted = {(v, kind) for kind in TYPES for v in range(1, schema.schema_version(kind) + 1)}
    assert wanted <= have, sorted(wanted - have)


@pytest.mark.parametrize(("version", "kind", "path"), STORED, ids=[f"v{v}/{k}" for v, k, _ in STORED])
def test_a_stored_document_decodes_as_this_code_reads_it(version: int, kind: str, path: Path) -> None:
    event = ev.decode_event(path.read_bytes(), kind, version)
    assert ev.event_type(event) == kind
    assert ev.decode_event(ev.encode_event(event)) == event  # and is a current document again


def test_an_old_document_is_upcast_before_it_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A field renamed in version 2 of `assigned`: a version-1 document reads through its upcaster."""

    def rename(document: dict[str, typing.Any]) -> dict[str, typing.Any]:
        return {**document, "assignee": document.pop("owner")}

    monkeypatch.setitem(schema.CURRENT, "assigned", 2)
    monkeypatch.setitem(schema.UPCASTERS, ("assigned", 1), rename)
    old = b'{"type": "assigned", "ts": "2026-03-01T12:00:00Z", "old_assignee": null, "owner": "ana"}'
    event = ev.decode_event(old, "assigned", 1)
    assert isinstance(event, ev.Assigned) and event.assignee == "ana"
    with pytest.raises(msgspec.ValidationError):
        ev.decode_event(old)  # read as current, it is not one
    with pytest.raises(ValueError, match="newer"):
        schema.upcast("assigned", 3, {})


def test_the_sql_fast_paths_read_only_the_versions_they_were_written_for() -> None:
    assert {kind: schema.schema_version(kind) for kind in SQL_READS} == SQL_READS

"""Advisory lock ids come from one registry, and no two uses share one."""

import re
from pathlib import Path

from services.eventstore import locks

ROOT = Path(__file__).resolve().parents[2]


def test_every_lock_id_is_unique() -> None:
    ids = list(locks.ALL.values())
    assert len(ids) == len(set(ids)) == 10
    assert {k for k, v in vars(locks).items() if isinstance(v, int) and k.isupper()} == set(locks.ALL)


def test_no_lock_is_taken_by_a_number_written_in_place() -> None:
    """Every pg_advisory_* call passes its id as a parameter, the registry's, never a literal."""
    literal = re.compile(r"pg_(try_)?advisory_(xact_)?(un)?lock\(\s*\d")
    offending = [
        str(p.relative_to(ROOT))
        for root in ("domain", "services", "projections")
        for p in (ROOT / root).rglob("*.py")
        if literal.search(p.read_text())
    ]
    assert offending == []
    users = [p for p in (ROOT / "services").rglob("*.py") if "pg_advisory" in p.read_text()]
    assert all("locks" in p.read_text() for p in users), [str(p) for p in users]

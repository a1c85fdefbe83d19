"""An archive's recorded location leads back to its file, whatever the folder is called."""

import uuid
from pathlib import Path

import pytest

from services.archive.files import archive_file, archive_path

TICKET = uuid.UUID("0c4f2a8e-6d4b-4f7e-9a51-3b2c1d0e9f88")


def test_a_location_is_the_file_it_was_made_from() -> None:
    for folder in ("/var/lib/ticketing/archive", "/srv/SOC archive/é", "/tmp/100%/x#y"):
        path = Path(folder) / "org" / "t.json.gz"
        assert archive_path(path.as_uri()) == path  # as_uri percent-encodes; reading it back decodes
    assert archive_path("s3://bucket/org/t.json.gz") is None


@pytest.mark.parametrize(
    "oid", ["../escape", "../../etc", "/etc", "a/../../b", "..", ".", "a\\..\\b", "org with space", "x" * 300]
)
def test_a_hostile_org_id_never_leaves_the_archive_folder(tmp_path: Path, oid: str) -> None:
    folder = tmp_path / "archive"
    path = archive_file(folder, oid, TICKET)
    assert path.resolve().parent.parent == folder.resolve()
    assert path.parent.name.startswith("_") and len(path.parent.name) == 33


def test_a_plain_org_id_names_its_folder(tmp_path: Path) -> None:
    for oid in ("8cbe27f4-1b2c-4d3e-9f00-aabbccddeeff", "org-a", "acme.prod_1"):
        assert archive_file(tmp_path, oid, TICKET) == tmp_path / oid / f"{TICKET}.json.gz"
    assert archive_file(tmp_path, "../x", TICKET) != archive_file(tmp_path, "../y", TICKET)

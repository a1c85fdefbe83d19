"""An archive's recorded location leads back to its file, whatever the folder is called."""

from pathlib import Path

from services.scheduler.retention import archive_path


def test_a_location_is_the_file_it_was_made_from() -> None:
    for folder in ("/var/lib/ticketing/archive", "/srv/SOC archive/é", "/tmp/100%/x#y"):
        path = Path(folder) / "org" / "t.json.gz"
        assert archive_path(path.as_uri()) == path  # as_uri percent-encodes; reading it back decodes
    assert archive_path("s3://bucket/org/t.json.gz") is None

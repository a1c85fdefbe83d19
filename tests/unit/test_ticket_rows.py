"""The SQL that reads ticket and detection rows from stored event documents names the documents'
fields; those names are checked against the domain's structs when the module is imported, so a
field renamed in the domain fails at import instead of loading NULLs (the values themselves are
checked against the domain's decoding in tests/integration/test_projection.py)."""

import pytest

from domain import events as ev
from domain.detections import Detection
from projections import tickets


def test_a_column_named_after_no_field_of_the_document_is_refused() -> None:
    with pytest.raises(TypeError, match="detection_category"):
        tickets._document(Detection, "detection_id text, detection_category text")
    assert tickets._document(ev.MergedFrom, "detections") == "detections"

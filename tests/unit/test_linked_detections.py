"""A ticket's linked detections behave as an immutable dict in link order, whichever version is
extended (hypothesis against a dict model)."""

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.detections import Detection
from domain.linked_detections import LinkedDetections

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def det(i: int, priority: int = 1) -> Detection:
    return Detection(f"d{i}", "org", "c", "s", priority, "s1", "h", T0, "limacharlie")


def test_reads_like_a_dict_in_link_order() -> None:
    ds = LinkedDetections([det(2), det(1)]).linked(det(3))
    assert list(ds) == ["d2", "d1", "d3"] and len(ds) == 3
    assert "d1" in ds and "d9" not in ds and 1 not in ds  # type: ignore[comparison-overlap]
    assert ds["d3"] == det(3) and ds.get("d9") is None
    assert ds == {"d2": det(2), "d1": det(1), "d3": det(3)}
    assert list(ds.values()) == [det(2), det(1), det(3)]


def test_an_older_version_does_not_see_what_a_newer_one_linked() -> None:
    a = LinkedDetections([det(1)])
    b = a.linked(det(2))  # extends the shared store
    c = a.linked(det(3))  # a is no longer the newest: copies
    d = b.linked(det(4))
    assert dict(a) == {"d1": det(1)}
    assert list(b) == ["d1", "d2"] and "d4" not in b and "d3" not in b
    assert list(c) == ["d1", "d3"] and "d2" not in c
    assert list(d) == ["d1", "d2", "d4"]
    for version in (a, b, c):
        assert "d4" not in version
        with pytest.raises(KeyError):
            version["d4"]


def test_relinking_replaces_in_place_and_unlinking_removes() -> None:
    ds = LinkedDetections([det(1), det(2)])
    replaced = ds.linked(det(1, priority=9))
    assert list(replaced) == ["d1", "d2"] and replaced["d1"].detection_priority == 9
    assert ds["d1"].detection_priority == 1
    removed = replaced.unlinked("d1")
    assert list(removed) == ["d2"] and list(replaced) == ["d1", "d2"]
    assert list(removed.linked(det(1))) == ["d2", "d1"]
    twice = ds.linked(det(3), det(3, priority=7))  # the later one wins, linked once
    assert list(twice) == ["d1", "d2", "d3"] and twice["d3"].detection_priority == 7


ops = st.lists(
    st.tuples(
        st.sampled_from(["link", "unlink"]),
        st.integers(0, 6),  # which detection
        st.integers(0, 30),  # which earlier version to start from
        st.integers(0, 10),  # priority: tells a replacement apart
    ),
    max_size=40,
)


@given(ops)
def test_every_version_matches_a_dict_built_the_same_way(steps: list[tuple[str, int, int, int]]) -> None:
    versions: list[tuple[LinkedDetections, dict[str, Detection]]] = [(LinkedDetections(), {})]
    for op, i, base, priority in steps:
        ds, model = versions[base % len(versions)]
        d = det(i, priority)
        if op == "link":
            versions.append((ds.linked(d), {**model, d.detection_id: d}))
        else:
            versions.append(
                (ds.unlinked(d.detection_id), {k: v for k, v in model.items() if k != d.detection_id})
            )
    for ds, model in versions:  # checked at the end: no later step changed an earlier version
        assert list(ds.items()) == list(model.items())
        assert len(ds) == len(model)
        assert all((f"d{i}" in ds) == (f"d{i}" in model) for i in range(7))

"""A ticket's linked detections: an immutable mapping, in link order, that grows in O(1).

A dict copied on every DetectionAdded made folding a ticket of n detections O(n²): 3.5 s at
30,000, minutes at the grouping cap's maximum of 100,000. Here the versions of one ticket share
one store and each sees only the first `len` entries of it. Linking to the newest version appends
to the store, which no older version can see; linking to an older version, replacing a detection
or unlinking one copies, as a dict would.
"""

from collections.abc import Iterable, Iterator, Mapping
from itertools import islice

from domain.detections import Detection


class LinkedDetections(Mapping[str, Detection]):
    __slots__ = ("_index", "_items", "_n")

    _index: dict[str, int]  # detection id -> position in _items, shared by the versions
    _items: list[Detection]
    _n: int  # how many of _items this version holds

    def __init__(self, detections: Iterable[Detection] = ()) -> None:
        """Later detections with an id already seen replace the earlier one in its place."""
        index: dict[str, int] = {}
        items: list[Detection] = []
        for d in detections:
            _put(index, items, d)
        self._index, self._items, self._n = index, items, len(items)

    def linked(self, *detections: Detection) -> "LinkedDetections":
        """A new version with these detections linked; this one is unchanged."""
        if self._n != len(self._items) or any(d.detection_id in self for d in detections):
            return LinkedDetections([*self._held(), *detections])
        for d in detections:  # one linked twice in this call is replaced past every version's end
            _put(self._index, self._items, d)
        new = LinkedDetections.__new__(LinkedDetections)
        new._index, new._items, new._n = self._index, self._items, len(self._items)
        return new

    def unlinked(self, *detection_ids: str) -> "LinkedDetections":
        gone = set(detection_ids)
        return LinkedDetections(d for d in self._held() if d.detection_id not in gone)

    def _held(self) -> Iterator[Detection]:
        return islice(self._items, self._n)

    def __getitem__(self, detection_id: str) -> Detection:
        at = self._index.get(detection_id)
        if at is None or at >= self._n:
            raise KeyError(detection_id)
        return self._items[at]

    def __contains__(self, detection_id: object) -> bool:
        at = self._index.get(detection_id) if isinstance(detection_id, str) else None
        return at is not None and at < self._n

    def __iter__(self) -> Iterator[str]:
        return (d.detection_id for d in self._held())

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"LinkedDetections({list(self._held())!r})"


def _put(index: dict[str, int], items: list[Detection], d: Detection) -> None:
    """Link d at the end, or in its place if its id is already in the store."""
    at = index.get(d.detection_id)
    if at is None:
        index[d.detection_id] = len(items)
        items.append(d)
    else:
        items[at] = d

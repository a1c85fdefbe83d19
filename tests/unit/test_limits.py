"""What the store can hold: times in range, and where a NUL character sits in a decoded value."""

import msgspec

from domain.limits import nul_at


class Inner(msgspec.Struct, rename="camel"):
    host_name: str


class Body(msgspec.Struct):
    title: str
    items: list[object]
    inner: Inner | None = None


def test_nul_at_names_the_first_place_in_document_order_with_wire_names() -> None:
    assert nul_at(Body("ok", ["a", {"k": "v"}])) is None
    assert nul_at(Body("ok", ["a", {"k": "v\x00"}], Inner("\x00"))) == "items[1].k"
    assert nul_at(Body("ok", [], Inner("h\x00"))) == "inner.hostName"
    assert nul_at({"bad\x00key": 1}) == "bad\x00key"
    assert nul_at("\x00") == "body"


def test_nul_at_walks_values_nested_past_the_recursion_limit() -> None:
    deep: object = "x\x00"
    for _ in range(5000):
        deep = [deep]
    where = nul_at({"a": deep})
    assert where == "a" + "[0]" * 5000

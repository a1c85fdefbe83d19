import pytest
from multidict import MultiDict

from projections.ticket_queries import InvalidPageToken, TicketFilter, decode_page_token, encode_page_token
from services.api.errors import ApiError
from services.api.tickets import ticket_filter


def test_filter_parses_comma_joined_lists() -> None:
    f = ticket_filter(
        MultiDict(oids="a,b", status="new,acknowledged", severity="high", tag="x,Y", page_size="10")
    )
    assert f.oids == ["a", "b"]
    assert f.status == ["new", "acknowledged"]
    assert f.tag == ["x", "Y"]
    assert (f.sort, f.order, f.page_size) == ("created_at", "desc", 10)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({}, "oids"),
        ({"oids": "a", "page_size": "0"}, "page_size"),
        ({"oids": "a", "page_size": "201"}, "page_size"),
        ({"oids": "a", "page_size": "ten"}, "page_size"),
        ({"oids": "a", "status": "new,bogus"}, "status"),
        ({"oids": "a", "severity": "urgent"}, "severity"),
        ({"oids": "a", "classification": "maybe"}, "classification"),
        ({"oids": "a", "sort": "hostname"}, "sort"),
        ({"oids": "a", "order": "up"}, "order"),
        ({"oids": "a", "search": "x" * 300}, "search"),
        ({"oids": ",".join(["o"] * 201)}, "oids"),
    ],
)
def test_bad_parameters_name_the_field(query: dict[str, str], field: str) -> None:
    with pytest.raises(ApiError) as err:
        ticket_filter(MultiDict(query))
    assert err.value.status == 422
    assert err.value.field == field


def test_page_token_round_trips_and_is_bound_to_the_sort() -> None:
    import uuid
    from datetime import UTC, datetime

    f = TicketFilter(oids=["a"])
    key = (datetime(2026, 1, 1, tzinfo=UTC), 4, uuid.UUID(int=5))
    token = encode_page_token(f, key)
    assert decode_page_token(f, token) == list(key)
    with pytest.raises(InvalidPageToken):
        decode_page_token(TicketFilter(oids=["a"], order="asc"), token)
    for garbage in ("!!!", "e30", token[:-3]):
        with pytest.raises(InvalidPageToken):
            decode_page_token(f, garbage)

"""Query-string parsing with errors that name the field (422)."""

from collections.abc import Iterable

from multidict import MultiMapping

from services.api.errors import invalid

MAX_PARAM_LENGTH = 4096
MAX_LIST_ITEMS = 200
MAX_ITEM_LENGTH = 256


def text(
    query: MultiMapping[str], name: str, *, required: bool = False, max_length: int = 1024
) -> str | None:
    value = query.get(name)
    if value is None or value == "":
        if required:
            raise invalid(name, f"{name} is required")
        return None
    if len(value) > max_length:
        raise invalid(name, f"{name} is longer than {max_length} characters")
    no_nul(name, value)
    return value


def no_nul(name: str, value: str) -> None:
    """%00 decodes to a NUL character, which no query can send to PostgreSQL."""
    if "\x00" in value:
        raise invalid(name, f"{name} holds a NUL character (%00)")


def csv(
    query: MultiMapping[str], name: str, *, allowed: Iterable[str] | None = None, required: bool = False
) -> list[str]:
    """Comma-joined values (the clients' list encoding); repeated parameters are accepted too."""
    raw = [v for v in query.getall(name, []) if v != ""]
    if not raw:
        if required:
            raise invalid(name, f"{name} is required")
        return []
    if sum(len(v) for v in raw) > MAX_PARAM_LENGTH:
        raise invalid(name, f"{name} is too long")
    values = [item.strip() for v in raw for item in v.split(",") if item.strip()]
    if len(values) > MAX_LIST_ITEMS:
        raise invalid(name, f"{name} lists more than {MAX_LIST_ITEMS} values")
    for v in values:
        if len(v) > MAX_ITEM_LENGTH:
            raise invalid(name, f"a value of {name} is longer than {MAX_ITEM_LENGTH} characters")
        no_nul(name, v)
    if allowed is not None:
        allowed_set = tuple(allowed)
        wrong = [v for v in values if v not in allowed_set]
        if wrong:
            raise invalid(name, f"{name} has unknown values {wrong}; allowed: {', '.join(allowed_set)}")
    return list(dict.fromkeys(values))


def choice(query: MultiMapping[str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = query.get(name) or default
    if value not in allowed:
        raise invalid(name, f"{name} must be one of {', '.join(allowed)}")
    return value


def integer(query: MultiMapping[str], name: str, *, default: int, low: int, high: int) -> int:
    value = query.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise invalid(name, f"{name} must be an integer") from None
    if not low <= number <= high:
        raise invalid(name, f"{name} must be between {low} and {high}")
    return number


def ticket_number(raw: str) -> int:
    try:
        number = int(raw)
    except ValueError:
        raise invalid("ticket_number", "the ticket number in the path must be a positive integer") from None
    if not 1 <= number <= 2**31 - 1:
        raise invalid("ticket_number", "the ticket number in the path must be a positive integer")
    return number

"""The seed's tag rules: <= 128 printable characters each, <= 50 per ticket, case-insensitive dedup."""

from collections.abc import Iterable

from domain.errors import InvalidValue
from domain.limits import TAG_MAX_LENGTH, TAGS_MAX


def normalize_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Keep the first spelling of each tag (case preserved), drop later case-insensitive duplicates."""
    seen: set[str] = set()
    out: list[str] = []
    for tag in tags:
        if not tag or not tag.strip():
            raise InvalidValue("tags", "a tag cannot be empty")
        if len(tag) > TAG_MAX_LENGTH:
            raise InvalidValue("tags", f"a tag has at most {TAG_MAX_LENGTH} characters")
        if not tag.isprintable():
            raise InvalidValue("tags", "tags take printable characters only (no control characters)")
        folded = tag.casefold()
        if folded not in seen:
            seen.add(folded)
            out.append(tag)
    if len(out) > TAGS_MAX:
        raise InvalidValue("tags", f"a ticket has at most {TAGS_MAX} tags")
    return tuple(out)

"""Where an org's streams live: its log shard, and the database that holds the shard.

An org's shard is fixed by its id and the shard count (migration 0036's `ticketing_shard_of`, the
same rule in SQL); a placement maps shards to database URLs, so a deployment whose orgs outgrow one
PostgreSQL primary places some shards on another cluster. Shards a placement does not name stay on
the home database (DATABASE_URL), which also holds what belongs to no org: credentials, sessions.
"""

import hashlib
import re


def shard_of(oid: str, shards: int) -> int:
    """The first 32 bits of the org id's MD5, modulo the shard count (one shard: 0)."""
    if shards <= 1:
        return 0
    return int.from_bytes(hashlib.md5(oid.encode()).digest()[:4], "big") % shards


_ENTRY = re.compile(r"(\d+)(?:-(\d+))?=(\S+)")


def parse_placement(text: str, shards: int, name: str = "TICKETING_PLACEMENT") -> dict[int, str]:
    """`0-3=postgresql://a/db 4-7=postgresql://b/db`: entries separated by spaces, newlines or `;`,
    each a shard or an inclusive range of shards, `=`, a database URL. Shards not named stay on the
    home database; a shard named twice, or past the shard count, is refused."""
    placed: dict[int, str] = {}
    for entry in (e for e in re.split(r"[\s;]+", text.strip()) if e):
        match = _ENTRY.fullmatch(entry)
        if match is None:
            shown = entry.split("=", 1)[0]
            raise ValueError(f"{name}: {shown!r}… is not SHARD[-SHARD]=DATABASE_URL")
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        if not 0 <= first <= last < shards:
            raise ValueError(
                f"{name}: shards {first}-{last} are not within 0-{shards - 1} (TICKETING_LOG_SHARDS={shards})"
            )
        for shard in range(first, last + 1):
            if shard in placed:
                raise ValueError(f"{name}: shard {shard} is placed twice")
            placed[shard] = match[3]
    return placed

"""Every PostgreSQL advisory lock the services take, in one place, so that no two uses share an id.

Fixed locks are one-key (`pg_advisory_lock(bigint)`). A space of locks (one per ticket, group key,
org) is an id that either seeds the hash of the member into a one-key lock
(`hashtextextended(member, space)`: tickets, groups) or is the first key of a two-key lock
(`pg_advisory_lock(space, hashtext(member))`: deliveries, signing secrets), which PostgreSQL keeps
apart from one-key locks. Ids are unique across all of them, so a reader never has to ask which.
"""

from typing import Final

# One-key locks.
MIGRATIONS: Final = 7_261_001  # session: two migrate steps starting at once run one after the other
APPEND: Final = 7_261_002  # transaction: shard 0's gap-free position order (the single log's lock)
SCHEDULER_LEADER: Final = 7_261_003  # session: one active scheduler
LOG_LAYOUT: Final = 7_261_004  # transaction: appends shared, a reshard exclusive

# Lock spaces, one lock per member.
TICKETS: Final = 7261  # writers of one ticket queue behind each other
GROUPS: Final = 7262  # one writer per (org, group key) decides a group window
DELIVERIES: Final = 7263  # one deliverer per org and channel
SIGNING_SECRETS: Final = 7264  # one writer of an org's signing secret
ROUTING: Final = 7265  # one router per org: its turns and the analysts' loads are read and moved together
SHARDS: Final = 7266  # (space, shard): the gap-free position order of shards 1 and up

ALL: Final = {
    "MIGRATIONS": MIGRATIONS,
    "APPEND": APPEND,
    "SCHEDULER_LEADER": SCHEDULER_LEADER,
    "LOG_LAYOUT": LOG_LAYOUT,
    "TICKETS": TICKETS,
    "GROUPS": GROUPS,
    "DELIVERIES": DELIVERIES,
    "SIGNING_SECRETS": SIGNING_SECRETS,
    "ROUTING": ROUTING,
    "SHARDS": SHARDS,
}

"""Roles from the identity provider's groups: an org maps group names to the seed's permissions.

A user signed in through single sign-on holds, in each org, the permissions that the org's
`role_mappings` give any of their groups. Operators are never mapped here: an org's own
configuration cannot make anyone an operator of every org (that group is a service setting).
"""

from collections.abc import Iterable, Mapping
from typing import Annotated, Final, Literal, get_args

import msgspec

# The seed's four permissions: what a person may hold in an org (ticket.track is an integration's).
RolePermission = Literal["investigation.get", "investigation.set", "org.conf.get", "org.conf.set"]
ROLE_PERMISSIONS: Final[tuple[str, ...]] = get_args(RolePermission)
MAX_ROLE_MAPPINGS: Final = 200

GroupName = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]
RoleMappings = Annotated[
    dict[GroupName, Annotated[list[RolePermission], msgspec.Meta(min_length=1, max_length=4)]],
    msgspec.Meta(max_length=MAX_ROLE_MAPPINGS),
]


def permissions_for(mappings: Mapping[str, Iterable[str]], groups: Iterable[str]) -> frozenset[str]:
    """What these groups give in one org: the union of their mappings (no group mapped: nothing)."""
    return frozenset(p for g in set(groups) for p in mappings.get(g, ()))

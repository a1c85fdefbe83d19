"""Roles from groups (domain/roles.py): what a single sign-on user holds in an org."""

from domain.roles import ROLE_PERMISSIONS, permissions_for
from services.auth.tokens import PERMISSIONS


def test_a_users_rights_in_an_org_are_the_union_of_their_mapped_groups() -> None:
    mappings = {"analysts": ["investigation.get", "investigation.set"], "leads": ["org.conf.get"]}
    assert permissions_for(mappings, ["analysts", "leads", "other"]) == {
        "investigation.get", "investigation.set", "org.conf.get"}  # fmt: skip
    assert permissions_for(mappings, ["other"]) == frozenset()
    assert set(ROLE_PERMISSIONS) | {"ticket.track"} == set(PERMISSIONS)  # one list of the seed's four

"""Grouping rules, windows, suppressions, recurrence and split, pure."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import get_args

import pytest

from domain.commands import LinkDetection, OpenTicket, SplitOff
from domain.config import OrgConfig, Recurrence
from domain.detections import Detection, DetectionEntities, parse_detection
from domain.errors import InvalidValue, TicketClosed
from domain.events import SplitTo
from domain.grouping import GroupCandidate, Rules, choose, recurred
from domain.rules import KEY_FIELDS, GroupingRule, KeyField, RuleMatch, Window
from domain.suppressions import Holding, Suppression, SuppressionRequest, create, end
from domain.ticket import decide, fold

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def det(
    minutes: float = 0, cat: str = "c", prio: int = 3, user: str | None = None, src: str = "edr"
) -> Detection:
    entities = DetectionEntities(user=user) if user else None
    return Detection(str(uuid.uuid4()), "o", cat, src, prio, "s1", "h", T0 + timedelta(minutes=minutes),
                     "limacharlie", entities=entities)  # fmt: skip


def test_the_first_matching_rule_wins_and_a_missing_entity_falls_through() -> None:
    rules = (
        GroupingRule("crit", ("category",), RuleMatch(category="logon_*", priority_min=8)),
        GroupingRule("users", ("user",), RuleMatch(category="logon_*")),
        GroupingRule("edr", ("sensor",), RuleMatch(source="ed?")),
    )
    r = Rules(OrgConfig(grouping_rules=rules))
    assert (k := r.keying(det(cat="logon_x", prio=9), recurrence=False)) and k.grouping.rule == "crit"
    assert (k := r.keying(det(cat="logon_x", user="al"), recurrence=False)) and k.grouping.key == {
        "user": "al"
    }
    assert (k := r.keying(det(cat="logon_x"), recurrence=False)) and k.grouping.rule == "edr"  # no user
    assert r.keying(det(cat="logon_x", src="ndr"), recurrence=False) is None  # nothing matches, no grouping
    assert r.keying(det(cat="x", src="ndr"), recurrence=True) is not None  # recurrence keys it still
    a, b = (
        r.keying(det(cat="logon_x", user="al"), recurrence=False),
        r.keying(det(cat="logon_y", user="al"), recurrence=False),
    )
    assert a and b and a.key == b.key and a.joins


def test_rule_keys_never_meet_the_default_keys() -> None:
    config = OrgConfig(
        auto_grouping_enabled=True,
        grouping_rules=(GroupingRule("r", ("category", "sensor"), RuleMatch(category="a")),),
    )
    r = Rules(config)
    ruled, plain = r.keying(det(cat="a"), recurrence=False), r.keying(det(cat="a", src="x"), recurrence=False)
    assert ruled and plain and ruled.grouping.rule == "r"
    default = Rules(OrgConfig(auto_grouping_enabled=True)).keying(det(cat="a"), recurrence=False)
    assert default is not None and default.key != ruled.key


def test_the_key_fields_are_the_detection_fields_and_its_entities() -> None:
    assert get_args(KeyField) == KEY_FIELDS
    assert set(KEY_FIELDS) >= set(DetectionEntities.__struct_fields__)


def test_fixed_and_sliding_windows() -> None:
    fixed, sliding = Window(10), Window(10, "sliding", 30)
    c = GroupCandidate(uuid.uuid4(), T0, 1, T0 + timedelta(minutes=25))
    assert choose([c], det(9.9), fixed) is c and choose([c], det(10), fixed) is None
    assert choose([c], det(29.9), sliding) is c  # within 10 of the last, within the span
    assert choose([c], det(30), sliding) is None  # the span is over
    assert choose([GroupCandidate(c.ticket_id, T0, 1, T0)], det(10), sliding) is None  # 10 after the last
    assert Window(10, "sliding").span() == timedelta(days=1)  # no span given: a day


def test_recurrence_is_within_the_window_after_the_resolution() -> None:
    config = OrgConfig(recurrence=Recurrence("reopen", 60))
    resolved = GroupCandidate(
        uuid.uuid4(), T0, 2, T0, resolved_at=T0 + timedelta(minutes=10), ticket_number=4
    )
    assert recurred([resolved], det(10), config) is resolved
    assert recurred([resolved], det(69.9), config) is resolved
    assert recurred([resolved], det(70), config) is None
    assert recurred([resolved], det(5), config) is None  # before the resolution: late news, not a recurrence
    assert recurred([resolved], det(20), OrgConfig()) is None  # off


def test_a_suppression_holds_until_it_ends_and_never_a_critical_unless_told() -> None:
    now = T0 + timedelta(hours=1)
    request = SuppressionRequest(
        RuleMatch(category="scan*"), "scanner", now + timedelta(days=1), {"user": "svc"}
    )
    s = create(request, uuid.uuid4(), "o", "lead", now).suppression
    held = Holding([s])
    assert held.holder(det(cat="scan", user="svc"), "medium", now) is s
    assert held.holder(det(cat="scan", user="bob"), "medium", now) is None
    assert held.holder(det(cat="scan", user="svc"), "critical", now) is None
    loud = Suppression(s.suppression_id, "o", s.match, "r", s.expires_at, s.key_values, include_critical=True)
    assert Holding([loud]).holder(det(cat="scan", user="svc"), "critical", now) is loud
    assert held.holder(det(cat="scan", user="svc"), "medium", s.expires_at) is None  # expired: at once
    [ended] = end(s, now)
    assert ended.suppression_id == s.suppression_id and end(s, s.expires_at) == []


@pytest.mark.parametrize(("days", "field"), [(-1, "expires_at"), (31, "expires_at")])
def test_a_suppression_lasts_at_most_30_days(days: int, field: str) -> None:
    request = SuppressionRequest(RuleMatch(), "r", T0 + timedelta(days=days))
    with pytest.raises(InvalidValue) as err:
        create(request, uuid.uuid4(), "o", "lead", T0)
    assert err.value.field == field


def test_split_refusals_and_events() -> None:
    tid, new = uuid.uuid4(), uuid.uuid4()
    a, b = det(0), det(1)
    state = fold([*decide(OpenTicket(tid, "o", 1, "low", a), None, T0)])
    state = fold(decide(LinkDetection(tid, b), state, T0), state)
    assert state is not None
    [event] = decide(SplitOff(tid, new, 2, (b.detection_id,)), state, T0)
    assert isinstance(event, SplitTo) and event.ticket_number == 2
    after = fold([event], state)
    assert (
        after is not None
        and list(after.detections) == [a.detection_id]
        and after.related_ticket_numbers == (2,)
    )
    for ids in ((), ("nope",), (a.detection_id, b.detection_id), (b.detection_id, b.detection_id)):
        with pytest.raises(InvalidValue):
            decide(SplitOff(tid, new, 2, ids), state, T0)
    merged = fold(decide(OpenTicket(new, "o", 2, "low"), None, T0))
    assert merged is not None
    from domain.commands import MergeInto

    gone = fold(decide(MergeInto(tid, new, 2, "o"), state, T0), state)
    with pytest.raises(TicketClosed):
        decide(SplitOff(tid, uuid.uuid4(), 3, (b.detection_id,)), gone, T0)


def test_entities_are_read_from_both_formats_and_never_refuse_a_detection() -> None:
    lc = (b'{"detect_id":"1","cat":"c","routing":{"oid":"o","int_ip":"10.0.0.1","ext_ip":7},'
          b'"detect":{"event":{"USER_NAME":"alice"}}}')  # fmt: skip
    d = parse_detection(lc, key_oid=None, arrival=T0)
    assert d.entities == DetectionEntities(user="alice", src_ip="10.0.0.1")
    odd = b'{"detect_id":"1","cat":"c","routing":{"oid":"o"},"detect":{"event":[1,2]}}'
    assert parse_detection(odd, key_oid=None, arrival=T0).entities is None
    eh = (b'{"id":5,"type":"t","riskScore":50,"participants":[{"role":"offender","ipaddr":"1.2.3.4",'
          b'"username":"bob"},{"role":"victim","hostname":"db","ipaddr":"5.6.7.8"}]}')  # fmt: skip
    assert parse_detection(eh, key_oid="o", arrival=T0).entities == DetectionEntities(
        user="bob", src_ip="1.2.3.4", dst_ip="5.6.7.8", dst_host="db"
    )

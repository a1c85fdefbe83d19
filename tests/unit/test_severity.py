import pytest

from domain.severity import SeverityMapping, severity_for


@pytest.mark.parametrize(
    ("priority", "severity"),
    [
        (0, "low"),
        (2, "low"),
        (3, "medium"),
        (4, "medium"),
        (5, "high"),
        (7, "high"),
        (8, "critical"),
        (10, "critical"),
    ],
)
def test_seed_default_mapping(priority: int, severity: str) -> None:
    assert severity_for(priority) == severity


def test_custom_thresholds() -> None:
    mapping = SeverityMapping(critical_min=10, high_min=9, medium_min=1)
    assert [severity_for(p, mapping) for p in (0, 1, 8, 9, 10)] == [
        "low",
        "medium",
        "medium",
        "high",
        "critical",
    ]

"""The soak's memory check: steady services and a cache that fills once pass, a leak fails. A
backlog that did not drain says who was busy meanwhile."""

from tests.bench.soak import Interval, drain_detail, memory_growth


def series(name: str, *rss: float) -> list[Interval]:
    return [
        Interval(
            elapsed_s=60.0 * i, published=0, visible=0, backlog=0, p99_ms=None, rss_mb={name: r}, cpu_pct={}
        )
        for i, r in enumerate(rss)
    ]


def test_a_service_that_fills_its_caches_early_and_then_holds_passes() -> None:
    assert memory_growth(series("ingest", 60, 120, 150, 155, 160, 162)) == {}


def test_a_cache_that_fills_once_in_the_middle_of_the_run_passes() -> None:
    # the scheduler of a 30-minute soak: the first SLA deadlines pass 15 minutes in
    assert memory_growth(series("scheduler", 33, 33, 33, 60, 95, 96)) == {}


def test_a_service_that_keeps_growing_is_named_with_its_figures() -> None:
    assert memory_growth(series("api", 50, 60, 70, 85, 100, 115)) == {"api": (70, 100, 115)}


def test_small_growth_of_a_small_process_is_not_a_leak() -> None:
    # +40% but 4-6 MB a third: allocator noise, not a trend worth failing a run for
    assert memory_growth(series("s", 30, 30, 30, 34, 38, 42)) == {}


def test_a_backlog_left_says_who_was_busy_the_busiest_first() -> None:
    [last] = series("ingest", 140)
    last.cpu_pct = {"ingest": 3.0, "broker": 77.4, "postgres": 5.2}
    assert drain_detail(111_000, last) == (
        "111,000 not visible 300 s after publishing stopped; meanwhile, % of a core: broker 77, postgres 5, ingest 3"
    )
    assert drain_detail(0, last) == "0 not visible 300 s after publishing stopped"

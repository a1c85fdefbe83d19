"""The soak's memory check: steady services and a cache that fills once pass, a leak fails."""

from services.bench.soak import Interval, memory_growth


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

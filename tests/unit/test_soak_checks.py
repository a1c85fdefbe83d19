"""The soak's memory check: steady or settling services pass, one that keeps growing fails."""

from services.bench.soak import Interval, memory_growth


def series(*rss: dict[str, float]) -> list[Interval]:
    return [Interval(elapsed_s=60.0 * i, published=0, visible=0, backlog=0, p99_ms=None, rss_mb=r,
                     cpu_pct={})
            for i, r in enumerate(rss)]  # fmt: skip


def test_a_service_that_fills_its_caches_early_and_then_holds_passes() -> None:
    filling = series(
        {"ingest": 60}, {"ingest": 120}, {"ingest": 150}, {"ingest": 155}, {"ingest": 160}, {"ingest": 162}
    )
    assert memory_growth(filling) == {}


def test_a_service_that_keeps_growing_is_named_with_its_figures() -> None:
    leaking = series(
        {"api": 50, "relay": 40}, {"api": 60, "relay": 40}, {"api": 70, "relay": 41},
        {"api": 85, "relay": 41}, {"api": 100, "relay": 40}, {"api": 115, "relay": 41},
    )  # fmt: skip
    assert memory_growth(leaking) == {"api": (70, 115)}


def test_small_growth_of_a_small_process_is_not_a_leak() -> None:
    # +40% but only +12 MB: allocator noise, not a trend worth failing a run for
    assert memory_growth(series({"s": 30}, {"s": 30}, {"s": 30}, {"s": 36}, {"s": 40}, {"s": 42})) == {}

"""Pure ticketing rules: no I/O, no clock, no asyncio. Everything else depends on this, never the reverse."""

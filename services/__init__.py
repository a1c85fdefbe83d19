"""Everything that touches the world: stores, brokers, HTTP, processes."""

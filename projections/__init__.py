"""Read models: events in, rows out. Each can be rebuilt from the event store."""

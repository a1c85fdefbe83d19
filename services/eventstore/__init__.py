"""The PostgreSQL event store and its schema migrations."""

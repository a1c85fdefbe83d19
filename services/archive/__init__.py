"""Archived tickets: where their files live and how they are read back (the scheduler writes them,
the API reads them, an org purge deletes them)."""

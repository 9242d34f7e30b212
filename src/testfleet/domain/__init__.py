"""Domain types shared by the coordinator, the worker and the CLI: no I/O here."""

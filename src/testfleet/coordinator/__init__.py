"""The coordinator: one event loop that owns state, the REST API and the worker channel."""

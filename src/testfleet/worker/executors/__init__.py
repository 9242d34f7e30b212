"""Task executors, one module per task type; the worker agent runs attempts through them.

See :mod:`testfleet.worker.executors.base` for the contract every executor
keeps, and :mod:`testfleet.worker.executors.registry` for which executors a
worker has. Nothing is imported here, so the agent's import of the contract
does not import every executor.
"""

"""The worker process: connection loop, hardware probes and task executors."""

"""Running a pytest suite across the fleet: ``testfleet run`` and ``pytest --fleet``."""

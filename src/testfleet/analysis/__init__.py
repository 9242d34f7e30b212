"""Pure analysis over stored results (no I/O, no clock): regression detection."""

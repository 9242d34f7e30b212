"""Pure scheduling: matching, ordering and placement. No I/O, no clock, no awaits."""

"""``python -m testfleet`` runs the CLI (the demo starts its processes this way)."""

from testfleet.cli import main

main()

"""The ``testfleet`` command line."""

from testfleet.cli.app import app, main

__all__ = ["app", "main"]

"""Alerts evaluated inside the coordinator, and their webhook notifications.

``config.py`` reads the TOML file (``testfleet coordinator --alerts FILE``),
``rules.py`` holds the pure conditions, ``engine.py`` moves instances through
pending → firing → resolved on the coordinator's clock and stores them,
``notify.py`` sends them to webhooks without ever blocking the coordinator,
``payloads.py`` builds the Alertmanager and Slack bodies.
"""

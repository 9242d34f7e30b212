"""Who may use a coordinator: API tokens with roles (:mod:`.tokens`) and the audit
trail of what they did and were refused (:mod:`.audit`). No I/O here: the
store keeps the rows, ``coordinator/auth.py`` enforces them on requests."""

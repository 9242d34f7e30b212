"""Security: who may connect and what they may do. Certificates and TLS
(:mod:`.pki`, :mod:`.tls`), API tokens with roles (:mod:`.tokens`) and the audit
trail of what they did and were refused (:mod:`.audit`). No I/O in tokens and
audit: the store keeps the rows, ``coordinator/auth.py`` enforces them on requests."""

"""Security: who may connect and what they may do (certificates, TLS, credentials)."""

"""siem-exporter: pulls audit logs from Microsoft Graph into a SIEM, exactly once."""

__version__ = "0.1.0"

"""sitewatch: a website-availability monitor backed by PostgreSQL."""

__version__ = "0.1.0"

"""The operators' dashboard: a server-rendered web page over the database (docs/dashboard.md)."""

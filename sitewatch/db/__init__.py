"""The database: connections, the embedded server, schema migrations and all SQL."""

"""One HTTP check of one URL: the deadline, resolving, TLS, redirects, body cap and error kinds."""

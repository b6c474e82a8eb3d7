"""Managing sitewatch: what the command line and the write API share (the audit log)."""

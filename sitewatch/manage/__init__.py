"""Managing sitewatch: what the command line and the write API share (the import file format,
the audit log, the checks of a change of monitors)."""

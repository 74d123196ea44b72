"""Reports: the versioned JSON schema, tables for people, plots and HTML."""

"""The command line: `safemaml COMMAND` (safemaml.cli.main builds the parser and dispatches)."""

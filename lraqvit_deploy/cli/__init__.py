"""Command-line interface (`deploy`)."""

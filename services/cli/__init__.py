"""The ``fraudstream`` command line: Typer adapters only; nothing imports it."""

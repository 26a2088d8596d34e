"""One typer command per DVC stage: ``python -m stages.<name> --help``."""

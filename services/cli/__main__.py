"""``python -m services.cli``: the console script, for child processes of this interpreter."""

from services.cli.main import main

main()

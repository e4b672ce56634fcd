"""``python -m isthmus``: the CLI, including the remote entrypoint ``run-step``."""

from isthmus.cli import main

main()

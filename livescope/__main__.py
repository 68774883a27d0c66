"""``python -m livescope`` runs the command-line interface."""

from livescope.cli import main

main()

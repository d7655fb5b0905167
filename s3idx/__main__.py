"""``python -m s3idx`` runs the command line."""

from s3idx.cli import main

main()

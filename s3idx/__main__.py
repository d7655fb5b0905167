"""``python -m s3idx`` runs the command line."""

from s3idx.entry import main

main()

"""s3idx: JSON documents as compressed objects in S3, a small queryable index in MongoDB or SQLite."""

__version__ = "0.1.0.dev0"

"""The engine under every command: put, get, query, delete."""

from s3idx.engine.core import Engine, open_engine
from s3idx.engine.results import DeleteResult, Events, GetResult, PutResult, Reject

__all__ = ["DeleteResult", "Engine", "Events", "GetResult", "PutResult", "Reject", "open_engine"]

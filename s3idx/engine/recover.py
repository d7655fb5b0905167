"""Entries from object metadata alone, as one import: kept for the code that imports from here.

The work lives in three modules: ``metadata_entry`` (one object's metadata to its entry),
``collector`` (listed keys to entries with parallel HEADs, counting what is skipped) and
``probe`` (which key field a bucket's objects were written with; how many entries an index
holds). The counts they fill (``Skipped``, ``MaggmaObjects``) are in ``results``.
"""

from s3idx.engine.collector import EntryCollector
from s3idx.engine.metadata_entry import Recovered, Rewriter, recover_entry
from s3idx.engine.probe import indexed_entries, probe_key_field
from s3idx.engine.results import REPORTED_KEYS_LIMIT, MaggmaObjects, Skipped

__all__ = [
    "REPORTED_KEYS_LIMIT",
    "EntryCollector",
    "MaggmaObjects",
    "Recovered",
    "Rewriter",
    "Skipped",
    "indexed_entries",
    "probe_key_field",
    "recover_entry",
]

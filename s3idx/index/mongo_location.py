"""Where a MongoDB index is, as it may be shown: a URI's hosts and user, never its secrets.

Parsing only (no pymongo): the secrets found here are hidden by ``config.redact`` (the one
redaction function) wherever a message about this location may quote them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from s3idx.config import hide_secrets, location_parts


@dataclass(frozen=True, slots=True)
class MongoLocation:
    """What may be shown of a MongoDB URI, and the secrets that must never be."""

    scheme: str
    user: str
    has_password: bool
    hosts: str
    secrets: tuple[str, ...]

    @classmethod
    def parse(cls, uri: str) -> MongoLocation:
        scheme, sep, _ = uri.partition("://")
        if not sep:
            return cls("mongodb", "", False, "", ())
        # The one reading of a location's parts and secrets (config.location_parts), so that
        # this location shows in messages as ``redact_location`` shows the URI in ``info``.
        parts = location_parts(uri)
        hosts = re.split(r"[/?]", parts.after_userinfo, maxsplit=1)[0]
        return cls(scheme, parts.user, parts.has_password, hosts, parts.secrets)

    def describe(self, database: str, collection: str) -> str:
        """The location for messages: no password, no query string (it may hold secrets), and
        no secret where else it shows up (a short password that is part of the database name)."""
        user = f"{self.user}@" if self.user else ""
        auth = f"{self.user}:***@" if self.has_password else user
        shown = f"{self.scheme}://{auth}{self.hosts}/{database} (collection {collection})"
        return hide_secrets(shown, self.secrets)

"""Where a MongoDB index is, as it may be shown: a URI's hosts and user, never its secrets.

Parsing only (no pymongo): the secrets found here are hidden by ``config.redact`` (the one
redaction function) wherever a message about this location may quote them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

# Query-string options whose values are secrets, as pymongo spells them (lowercased).
SECRET_OPTIONS = frozenset({"tlscertificatekeyfilepassword", "authmechanismproperties"})


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
        scheme, sep, rest = uri.partition("://")
        if not sep:
            return cls("mongodb", "", False, "", ())
        # Up to the last '@': '@', '/' and '?' in a password must be percent-escaped, but people
        # forget, and then the whole password must still land in what we hide.
        userinfo, _, host_part = rest.rpartition("@")
        user, _, password = userinfo.partition(":")
        secrets = [password, unquote(password)]
        # Over-inclusive when a password holds a '?'; it only decides what else to hide.
        for name, value in parse_qsl(rest.partition("?")[2]):
            if name.lower() in SECRET_OPTIONS:
                secrets.append(value)
        # Longest first, so a secret containing another is hidden whole.
        kept = sorted({s for s in secrets if s}, key=len, reverse=True)
        hosts = re.split(r"[/?]", host_part, maxsplit=1)[0]
        return cls(scheme, user, bool(password), hosts, tuple(kept))

    def describe(self, database: str, collection: str) -> str:
        """The location for messages: no password, no query string (it may hold secrets)."""
        user = f"{self.user}@" if self.user else ""
        auth = f"{self.user}:***@" if self.has_password else user
        return f"{self.scheme}://{auth}{self.hosts}/{database} (collection {collection})"

"""AWS Signature Version 4 for S3 PutObject requests, as the http transport sends them.

Only what one PUT of a whole body needs: the headers signed are ``host``, the payload's SHA-256
(always signed, so S3 itself checks the body it received against it), the date, the session
token when there is one, and every ``x-amz-meta-*`` header. S3 does not normalise object paths,
so the canonical path is the path sent. A test compares every signature with botocore's own
signer for the same request.

The signing key is derived once per day and secret (four HMACs); a request then costs one
SHA-256 of its canonical form and one HMAC.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from hashlib import sha256

ALGORITHM = "AWS4-HMAC-SHA256"


class Credentials:
    """One set of AWS credentials, as read at one moment (they may be refreshed later)."""

    __slots__ = ("access_key", "secret_key", "token")

    def __init__(self, access_key: str, secret_key: str, token: str | None = None) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.token = token


class PutSigner:
    """Signs PUT requests for one host, region and service."""

    def __init__(self, host: str, region: str, service: str = "s3") -> None:
        self.host = host
        self.region = region
        self.service = service
        self._key_for: tuple[str, str] | None = None  # (day, secret) of _mac
        self._mac = hmac.new(b"", digestmod=sha256)
        self._orders: dict[tuple[tuple[str, ...], bool], _Order] = {}

    def headers(
        self,
        path: str,
        payload_sha256: str,
        metadata: Mapping[str, str],
        credentials: Credentials,
        amz_date: str,
    ) -> list[tuple[str, str]]:
        """The headers that authenticate ``PUT path`` (``path`` as sent, already quoted).

        ``amz_date`` is the request time as ``YYYYMMDDTHHMMSSZ`` (UTC).
        """
        # Signed headers go in name order; these names sort as listed, whatever the metadata
        # names ("x-amz-date" < "x-amz-meta-*" < "x-amz-security-token").
        token = credentials.token
        order = self._order(tuple(metadata), bool(token))
        signed = [("host", self.host), ("x-amz-content-sha256", payload_sha256)]
        signed.append(("x-amz-date", amz_date))
        signed += [(header, metadata[name]) for header, name in order.meta]
        if token:
            signed.append(("x-amz-security-token", token))
        headers = "".join([f"{name}:{' '.join(value.split())}\n" for name, value in signed])
        canonical = f"PUT\n{path}\n\n{headers}\n{order.names}\n{payload_sha256}"
        day = amz_date[:8]
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = f"{ALGORITHM}\n{amz_date}\n{scope}\n" + sha256(canonical.encode()).hexdigest()
        mac = self._signing_mac(day, credentials.secret_key).copy()
        mac.update(to_sign.encode())
        signature = mac.hexdigest()
        names = order.names
        signed.append(
            (
                "Authorization",
                f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
                f"SignedHeaders={names}, Signature={signature}",
            )
        )
        return signed

    def _order(self, names: tuple[str, ...], token: bool) -> _Order:
        """The metadata headers in signing order, and the SignedHeaders list (cached: every
        object of a run has the same metadata names)."""
        order = self._orders.get((names, token))
        if order is None:
            meta = sorted((f"x-amz-meta-{name.lower()}", name) for name in names)
            signed = ["host", "x-amz-content-sha256", "x-amz-date", *(h for h, _ in meta)]
            if token:
                signed.append("x-amz-security-token")
            order = self._orders[(names, token)] = _Order(meta, ";".join(signed))
        return order

    def _signing_mac(self, day: str, secret: str) -> hmac.HMAC:
        """An HMAC keyed with the day's signing key, copied per signature (four HMACs to
        derive the key, and keying one, cost more than the signature itself)."""
        if self._key_for != (day, secret):
            key = ("AWS4" + secret).encode()
            for part in (day, self.region, self.service, "aws4_request"):
                key = hmac.digest(key, part.encode(), "sha256")
            self._mac, self._key_for = hmac.new(key, digestmod=sha256), (day, secret)
        return self._mac


class _Order:
    __slots__ = ("meta", "names")

    def __init__(self, meta: list[tuple[str, str]], names: str) -> None:
        self.meta = meta  # (header name, metadata name), sorted by header name
        self.names = names

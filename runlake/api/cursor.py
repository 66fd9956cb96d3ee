"""Keyset paging tokens (docs/facets.md "Paging"): the one place `next` is made and read.

A token is opaque to clients: base64url of a small JSON array holding where the page
ended (the sort key's value and the run id of its last row), the sort, how many rows
came before the next page (for `offset`), and a fingerprint of the filters it was made
for. A page asked with a token starts strictly after that row, so runs that arrive
between two fetches neither shift nor repeat what follows. A token that does not
decode, or was made for another sort or other filters, is a 400 naming `next`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import msgspec

from runlake.api.params import bad_param
from runlake.errors import BadRequest

VERSION = 1


class Position(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """Where a page ended: the next page starts strictly after (value, run_id)."""

    version: int
    sort: str
    value: str | float | None  # a time as RFC 3339 text
    run_id: str
    offset: int  # rows before the next page
    filters: str  # fingerprint of the filters (filters_key)


_decoder = msgspec.json.Decoder(Position)


def filters_key(filters: Any) -> str:
    """A short fingerprint of a query's filters: a token only pages the list it came from."""
    return hashlib.sha256(msgspec.json.encode(filters, order="sorted")).hexdigest()[:16]


def encode(position: Position) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(position)).decode().rstrip("=")


def decode(token: str, sort: str, filters: str) -> Position:
    """The position in `token`, made for this `sort` and these `filters`, or a 400."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        position = _decoder.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise _bad("is not a token this server made; pass the `next` of a page "
                   "unchanged") from None
    if position.version != VERSION or position.offset < 0:
        raise _bad("is not a token this server made; pass the `next` of a page unchanged")
    if position.sort != sort:
        raise _bad(f"was made for sort {position.sort!r}, not {sort!r}; keep the sort "
                   "(or start again without next)")
    if position.filters != filters:
        raise _bad("was made for other filters; keep the filters (or start again "
                   "without next)")
    return position


def _bad(message: str) -> BadRequest:
    return bad_param("next", message)

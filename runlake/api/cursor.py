"""Keyset paging tokens (docs/facets.md "Paging"): the one place `next` is made and read.

A token is opaque to clients: base64url of a small JSON array holding where the page
ended (the sort key's value, or the values of a list's several sort keys, and the
tie-break key of its last row: a run id, a test name, a job id), the sort, how many
rows came before the next page (for `offset`), and a fingerprint of the filters it was
made for. A page asked with a token starts strictly after that row, so rows that
arrive between two fetches neither shift nor repeat what follows. A token that does
not decode, or was made for another sort or other filters, is a 400 naming `next`.
Every list with `next` makes and reads it here: `resume` and `next_of` (or, for a
list with its own token value, `start` and `make`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import msgspec

from runlake.api.params import bad_param
from runlake.errors import BadRequest
from runlake.views.keyset import Key, sql_values

VERSION = 1


class Position(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """Where a page ended: the next page starts strictly after (value, key)."""

    version: int
    sort: str
    # a time as RFC 3339 text; a list: one per sort key, for lists sorted on several
    value: str | float | list[str | float | None] | None
    key: str  # the last row's tie-break key (run id, test name, job id)
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


def start(token: str | None, offset: int, sort: str, filters: str) -> Position | None:
    """The position a page asked with `token` starts after (None: no token), or a 400:
    a token says where the page starts, so it does not go with an offset."""
    if token is None:
        return None
    if offset:
        raise _bad("cannot be given with offset: the token says where the page starts")
    return decode(token, sort, filters)


def make(more: bool, sort: str, value: Any, key: str, offset: int, filters: str
         ) -> str | None:
    """The `next` of a page that ended on the row with sort `value` and tie-break
    `key`, `offset` rows in; None when no rows follow."""
    return encode(Position(VERSION, sort, value, key, offset, filters)) if more else None


def resume(token: str | None, offset: int, sort: str, filters: str, keys: list[Key]
           ) -> tuple[tuple[list[Any], Any] | None, int]:
    """Where a page of a list sorted on `keys` starts: (None, offset) without a token,
    else the token's SQL-ready sort values and tie-break key, and its offset; a 400
    for a token whose values cannot be these keys'."""
    position = start(token, offset, sort, filters)
    if position is None:
        return None, offset
    try:
        return (sql_values(keys, position.value), position.key), position.offset
    except ValueError:
        raise not_made_here() from None


def next_of(page: dict[str, Any], ended: tuple[list[Any], Any] | None, sort: str,
            offset: int, filters: str) -> str | None:
    """The `next` of `page` (asked `offset` rows in) that ended on `ended` (its last
    row's sort values as a token holds them, and its tie-break key; None: last page)."""
    return None if ended is None else make(True, sort, ended[0], ended[1],
                                           offset + len(page["items"]), filters)


def not_made_here() -> BadRequest:
    """The 400 for a token that decodes but whose values cannot be its sort's."""
    return _bad("is not a token this server made; pass the `next` of a page unchanged")


def _bad(message: str) -> BadRequest:
    return bad_param("next", message)

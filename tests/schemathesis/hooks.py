"""Schemathesis hooks for tests/test_openapi.py's run (loaded via SCHEMATHESIS_HOOKS).

The runs list's `next` is an opaque token only a previous page hands out
(runlake/api/cursor.py): no schema can say which strings are tokens, so a positive
(schema-valid) case never sends a made-up one. Negative cases still do, and must get
the 400 naming `next`."""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis import GenerationMode


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    meta = getattr(case, "meta", None)
    if meta is not None and meta.generation.mode == GenerationMode.POSITIVE \
            and isinstance(case.query, dict):
        case.query.pop("next", None)

"""Blocking work from async tests, off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` on the loop's default executor, awaited."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

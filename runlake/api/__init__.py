"""Layer 4: the aiohttp server (ingest, operations, and later the read routes)."""

from runlake.api.app import make_app
from runlake.api.server import serve

__all__ = ["make_app", "serve"]

"""`runlake-client sync [DIR]`: send what a spool folder holds, then remove it."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .config import from_env
from .sender import Sender


def sync(directory: Path | None, url: str | None, api_key: str | None,
         timeout: float) -> int:
    """Drain the spool folder once; 0 when nothing is left, 1 otherwise."""
    settings = from_env(url, api_key, directory, max_tries=3)
    sender = Sender(settings)
    sender.drain_once(timeout)
    left = sender.spool.others_pending()
    counts = sender.counts
    print(f"runlake-client sync: {counts.sent} events sent, {counts.rejected} rejected, "
          f"{'some left in ' + str(settings.spool_path()) if left else 'spool empty'}")
    for message in counts.errors:
        print(f"  {message}", file=sys.stderr)
    return 1 if left else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runlake-client")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sync", help="send the spooled events of DIR (default: the URL's)")
    p.add_argument("dir", nargs="?", type=Path)
    p.add_argument("--url", help="the server (default RUNLAKE_URL or http://127.0.0.1:8080)")
    p.add_argument("--api-key", help="default RUNLAKE_API_KEY")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="give up (leaving the rest spooled) after this many seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    return sync(args.dir, args.url, args.api_key, args.timeout)


if __name__ == "__main__":
    sys.exit(main())

"""The `runlake` command: serve, ingest, replay, watch, keys, log stats, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from runlake.errors import RunlakeError
from runlake.settings import SETTINGS, BadSetting, Settings, resolve

Command = Callable[[argparse.Namespace, Settings], int]
DEMO_BATCH = 10_000  # events per append or POST: ~3.5 MB, well within the server's limits


def _add_setting_flags(p: argparse.ArgumentParser, names: Sequence[str]) -> None:
    by_name = {s.name: s for s in SETTINGS}
    for name in names:
        s = by_name[name]
        flag = "--" + name.replace("_", "-")
        help_text = f"{s.help} (env {s.env}, default {s.default})"
        if isinstance(s.default, bool):
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                           default=None, help=help_text)
        else:
            p.add_argument(flag, dest=name, type=type(s.default) if s.default is not None
                           else str, default=None, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runlake",
        description="runlake: an event-sourced run-history store "
        "(Parquet event log -> DuckDB views -> HTTP API).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the HTTP server (ingest, fold, inbox, reads)")
    _add_setting_flags(p, [s.name for s in SETTINGS])
    p.set_defaults(func=_serve)

    p = sub.add_parser("ingest", help="validate event files and append them to the log")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE",
                   help="*.ndjson, *.jsonl, *.json or *.parquet, optionally .gz; or a JUnit "
                        "XML or pytest report-log file (one run each, by content)")
    _add_setting_flags(p, ["data", "log_level"])
    _add_report_flags(p)
    p.set_defaults(func=_ingest)

    p = sub.add_parser("replay", help="rebuild the database from the log and swap it in")
    _add_setting_flags(p, ["data", "fold_batch_rows", "replay_memory", "log_level"])
    p.set_defaults(func=_replay)

    p = sub.add_parser("watch", help="ingest files dropped into <data>/inbox (no server)")
    _add_setting_flags(p, ["data", "inbox_delete", "log_level"])
    p.set_defaults(func=_watch)

    p = sub.add_parser("log", help="inspect the event log")
    p.add_argument("action", choices=["stats"], help="stats: counts per type and component")
    _add_setting_flags(p, ["data", "log_level"])
    p.set_defaults(func=_log_stats)

    _add_keys_parser(sub)

    p = sub.add_parser("demo", help="generate realistic synthetic events")
    p.add_argument("--runs", type=int, default=1000, help="how many runs (~30 events each)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same events)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--out", type=Path, help="write NDJSON to this file ('-' for stdout)")
    out.add_argument("--append", action="store_true",
                     help="append to the log of --data (no server may be running on it)")
    out.add_argument("--url", help="send to the server running at this address, e.g. "
                     "http://127.0.0.1:8080, and wait until it has folded them")
    p.add_argument("--key", default=os.environ.get("RUNLAKE_API_KEY"),
                   help="API key for --url when the server has keys: ingest role, and read "
                   "to wait for the fold (env RUNLAKE_API_KEY)")
    _add_setting_flags(p, ["data", "log_level"])
    p.set_defaults(func=_demo)

    _add_tail_parser(sub)
    return parser


def _add_keys_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="manage API keys (stored hashed in <data>/keys.json)",
                          description="API keys and their roles; see docs/security.md. "
                          "A running server picks up changes within seconds.")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("add", help="create a key and print it (once)")
    p.add_argument("--role", required=True, choices=["ingest", "read", "admin"],
                   help="ingest: append events; read: query; admin: everything")
    p.add_argument("--component", dest="components", action="append", default=[],
                   metavar="C", help="limit the key to this component (repeatable; "
                   "default: every component)")
    p.add_argument("--name", help="a unique name for the key (default: <role>-<random>)")
    _add_setting_flags(p, ["data", "log_level"])
    p.set_defaults(func=_keys_add)
    p = actions.add_parser("list", help="list keys (names, roles, components; never the keys)")
    _add_setting_flags(p, ["data", "log_level"])
    p.set_defaults(func=_keys_list)
    p = actions.add_parser("revoke", help="delete a key; a running server refuses it in seconds")
    p.add_argument("name", help="the key's name, as `runlake keys list` shows it")
    _add_setting_flags(p, ["data", "log_level"])
    p.set_defaults(func=_keys_revoke)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = resolve({s.name: getattr(args, s.name, None) for s in SETTINGS})
    except BadSetting as e:
        print(f"runlake: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args, settings))
    except RunlakeError as e:
        print(f"runlake: {e.message}", file=sys.stderr)
        for d in e.details[:20]:
            print(f"  {d}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from runlake.api.server import serve

    return serve(settings)


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from runlake.ingest.datafolder import open_folder
    from runlake.ingest.files import load_file
    from runlake.progress import Progress

    failed = 0
    busy = (f"POST the events to it (/api/events) or drop the files into "
            f"{settings.inbox_dir} instead")
    with open_folder(settings, if_busy=busy, database=False) as folder:
        event_log = folder.event_log
        progress = Progress("ingest", None)
        for path in args.files:
            try:
                events = load_file(path, attrs=_report_attributes(args))
            except RunlakeError as e:
                failed += 1
                print(f"runlake: {path}: {e.message}", file=sys.stderr)
                for d in e.details[:50]:
                    print(f"  {d}", file=sys.stderr)
                continue
            except OSError as e:
                failed += 1
                print(f"runlake: {path}: {e}", file=sys.stderr)
                continue
            first, last = event_log.append(events)
            progress.update(len(events))
            print(f"{path}: {len(events)} events, seq {first}..{last}")
        progress.finish()
    return 1 if failed else 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from runlake.ingest.datafolder import open_folder
    from runlake.ingest.replay import replay

    busy = ("stop it and run `runlake replay` again, or ask the server to replay "
            "(POST /api/db/replay with an admin key)")
    with open_folder(settings, if_busy=busy, database=False) as folder:
        replay(folder.event_log, settings)
    return 0


def _watch(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_watch_until_signalled(settings))


async def _watch_until_signalled(settings: Settings) -> int:
    """`runlake watch`: the server's inbox and fold without the server, until SIGINT
    or SIGTERM (or the watcher fails)."""
    from runlake.ingest.datafolder import open_folder_async

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    busy = (f"a server watches {settings.inbox_dir} itself: drop files there, "
            "or stop the server first")
    async with open_folder_async(settings, if_busy=busy, inbox=True) as folder:
        inbox = folder.inbox
        assert inbox is not None
        print(f"runlake watching {inbox.directory}", file=sys.stderr, flush=True)
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({stopped, inbox.start()}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
    print(
        f"runlake watch: {inbox.files_ingested} files ingested "
        f"({inbox.events_ingested} events), {inbox.files_rejected} rejected",
        file=sys.stderr,
    )
    return 0


def _log_stats(args: argparse.Namespace, settings: Settings) -> int:
    from runlake.events.stats import log_stats

    print(log_stats(settings.log_dir))
    return 0


def _keys_add(args: argparse.Namespace, settings: Settings) -> int:
    from runlake.api.keys import add_key

    key, secret = add_key(settings.keys_path, args.role, args.components, args.name)
    # The key alone on stdout, so `KEY=$(runlake keys add ...)` works; the rest on stderr.
    scope = "components " + ", ".join(key.components) if key.components else "all components"
    print(f"created key {key.name!r}: role {key.role}, {scope}", file=sys.stderr)
    print(secret)
    print("Store it now: it cannot be shown again (only its hash is kept in "
          f"{settings.keys_path}). Send it as X-API-Key or Authorization: Bearer.",
          file=sys.stderr)
    return 0


def _keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from runlake.api.keys import load_keys

    keys = load_keys(settings.keys_path)
    if not keys:
        print(f"no API keys in {settings.keys_path} (auth is off on a loopback bind)",
              file=sys.stderr)
        return 0
    rows = [("NAME", "ROLE", "COMPONENTS", "CREATED")] + [
        (k.name, k.role, ",".join(k.components) or "*",
         k.created_at.isoformat(timespec="seconds").replace("+00:00", "Z"))
        for k in keys
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from runlake.api.keys import revoke_key

    key = revoke_key(settings.keys_path, args.name)
    print(f"revoked key {key.name!r} (role {key.role}); a running server refuses it "
          "within seconds")
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from runlake import demo
    from runlake.progress import Progress

    progress = Progress("demo", args.runs * 30)
    batches = demo.ndjson_batches(args.runs, seed=args.seed, batch_size=DEMO_BATCH)
    if args.url:
        sent, last = demo.post_batches(args.url, batches, key=args.key, sent=progress.update)
        progress.finish()
        if demo.wait_folded(args.url, last, key=args.key):
            print(f"sent {sent} events to {args.url}, last seq {last}, folded: ready to query")
        else:
            print(f"sent {sent} events to {args.url}, last seq {last}; the server folds "
                  "them into its views shortly")
        return 0
    if args.append:
        from runlake.events import decode_events
        from runlake.ingest.datafolder import open_folder

        busy = ("send the events to the server instead: "
                f"runlake demo --runs {args.runs} --url http://127.0.0.1:8080 (its address)")
        with open_folder(settings, if_busy=busy, database=False) as folder:
            event_log = folder.event_log
            futures = []
            for chunk in batches:
                events = decode_events(chunk, ndjson=True)
                futures.append(event_log.submit(events))
                progress.update(len(events))
            last = futures[-1].result()[1] if futures else event_log.last_seq
        progress.finish()
        print(f"appended to {settings.log_dir}, last seq {last}")
        return 0
    out = sys.stdout.buffer if args.out is None or str(args.out) == "-" else open(args.out, "wb")
    try:
        for chunk in batches:
            out.write(chunk)
            progress.update(chunk.count(b"\n"))
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    progress.finish()
    return 0


def _add_report_flags(p: argparse.ArgumentParser) -> None:
    """The run a test report (JUnit XML, report-log) becomes (docs/tests.md)."""
    g = p.add_argument_group("test reports (JUnit XML, pytest report-log)")
    g.add_argument("--component", default="test", help="the run's component (default: test)")
    g.add_argument("--run-id", help="the run's id (default: derived from the file's content)")
    for flag in ("--model", "--hardware", "--batch-id", "--name"):
        g.add_argument(flag, help=f"the run's {flag[2:].replace('-', '_')}")
    g.add_argument("--tag", action="append", default=[], metavar="KEY:VALUE",
                   help="a tag on the run, repeatable (commit:abc123, branch:main)")


def _report_attributes(args: argparse.Namespace) -> Any:
    from runlake.ingest.reports import RunAttributes

    tags = []
    for t in args.tag:
        key, sep, value = t.partition(":")
        if not sep or not key:
            raise SystemExit(f"runlake: --tag {t!r}: expected KEY:VALUE")
        tags.append((key, value))
    return RunAttributes(component=args.component, run_id=args.run_id, model=args.model,
                         hardware=args.hardware, batch_id=args.batch_id, name=args.name,
                         tags=tuple(tags))


def _add_tail_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tail", help="print a server's events as they arrive (docs/stream.md)")
    p.add_argument("--url", default=os.environ.get("RUNLAKE_URL", "http://127.0.0.1:8080"),
                   help="the server (env RUNLAKE_URL, default http://127.0.0.1:8080)")
    p.add_argument("--key", default=os.environ.get("RUNLAKE_API_KEY"),
                   help="API key with the read role, when the server has keys "
                   "(env RUNLAKE_API_KEY)")
    p.add_argument("--component", dest="components", action="append", default=[],
                   metavar="C", help="only this component (repeatable)")
    p.add_argument("--run-id", help="only this run")
    p.add_argument("--type", dest="types", action="append", default=[], metavar="TYPE",
                   help="only this event type (repeatable)")
    p.add_argument("--batch-id", help="only events carrying this batch_id")
    p.add_argument("--after", help="start after this seq, or 'end' (default: 0, or 'end' "
                   "with --follow)")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep following (reconnecting as needed) instead of stopping "
                   "once caught up")
    p.add_argument("--ndjson", action="store_true",
                   help="print each event as JSON (default: one readable line)")
    _add_setting_flags(p, ["log_level"])
    p.set_defaults(func=_tail)


def _tail(args: argparse.Namespace, settings: Settings) -> int:
    from runlake.api.stream_client import TailError, TailOptions, tail

    if args.after is not None and args.after != "end" and not args.after.isdigit():
        print(f"runlake tail: --after must be a seq or 'end', not {args.after!r}",
              file=sys.stderr)
        return 2
    options = TailOptions(args.url, args.key, args.components, args.run_id, args.types,
                          args.batch_id, args.after, args.follow, args.ndjson)
    try:
        return asyncio.run(tail(options))
    except TailError as e:
        print(f"runlake tail: {e}", file=sys.stderr)
        return 1

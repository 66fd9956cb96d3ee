"""Request parameters: each route's query string is one msgspec Struct, parsed here.

`parse_query` is the one way a query string becomes values: unknown names, a
name given twice (unless its field is a list) and anything that is not exactly
an ASCII integer, an RFC 3339 time or an allowed value get a 400 naming the
parameter and, for a choice, the allowed values. The Structs are also what
`/api/openapi.json` describes, so the document and the parser cannot drift.
"""

from __future__ import annotations

import functools
import re
import types
import typing
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import msgspec
from aiohttp import web
from msgspec import Meta
from multidict import MultiMapping

from runlake.errors import BadRequest, UnsupportedMediaType
from runlake.events.problems import split_error
from runlake.events.schema import SLUG_PATTERN, LogLevel, Outcome, RunStatus

# The event schema's component slug (DESIGN §1).
SLUG = re.compile(r"[a-z][a-z0-9_-]{0,63}")
MAX_PARAM_CHARS = 1024  # a query-string value
MAX_LIMIT = 1000
MAX_TAG_FILTERS = 50  # each is a join; a bound keeps one request's cost bounded

Q = TypeVar("Q", bound="NoQuery")
Text = Annotated[str, Meta(min_length=1, max_length=MAX_PARAM_CHARS)]
Time = Annotated[datetime, Meta(tz=True, description="RFC 3339 with a timezone, e.g. "
                                                     "2026-01-31T00:00:00Z")]
MinSeq = Annotated[int, Meta(ge=0, le=2**62, description="wait (bounded, read_wait_s) "
                                                         "until the fold has passed this seq")]
Limit = Annotated[int, Meta(ge=1, le=MAX_LIMIT, description=f"page size, at most {MAX_LIMIT}")]
Offset = Annotated[int, Meta(ge=0, le=10_000_000, description="rows to skip")]
TagFilter = Annotated[str, Meta(min_length=2, max_length=MAX_PARAM_CHARS, pattern="^[^:]+:",
                                description="key:value")]


class NoQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A route that takes no query parameters: any given is a 400."""


class ReadQuery(NoQuery):
    min_seq: MinSeq = 0


class Page(ReadQuery):
    limit: Limit = 50
    offset: Offset = 0


class LongPage(Page):
    limit: Limit = 100


NextToken = Annotated[Text, Meta(description="the `next` token of the previous page "
                                             "(keyset paging; not with offset)")]


class KeysetPage(Page):
    """A Page list that also pages by `next` (issue 17, docs/facets.md "Paging")."""

    next: NextToken | None = None


class KeysetLongPage(LongPage):
    """A LongPage list that also pages by `next` (issue 17, docs/facets.md "Paging")."""

    next: NextToken | None = None


RunSort = Literal[
    "created_at", "-created_at", "updated_at", "-updated_at", "started_at", "-started_at",
    "finished_at", "-finished_at", "duration_s", "-duration_s", "run_id", "-run_id",
    "status", "-status", "model", "-model", "hardware", "-hardware",
    "batch_id", "-batch_id", "name", "-name", "error", "-error"]


MAX_FILTER_VALUES = 100  # values of one multi-value filter (an IN list)
MAX_PARAM_FILTERS = 20  # param.<path> filters: each is a JSON extract per run
# A multi-value filter: repeated, or comma-separated (`\,` is a literal comma); OR within.
_ANY_OF = f"several values: repeat it or separate with commas (any matches), at most " \
          f"{MAX_FILTER_VALUES}"
AnyStatus = Annotated[list[RunStatus], Meta(max_length=MAX_FILTER_VALUES, description=_ANY_OF,
                                            extra={"csv": True})]
AnyText = Annotated[list[Text], Meta(max_length=MAX_FILTER_VALUES, description=_ANY_OF,
                                     extra={"csv": True})]
# `param.<path>=value` (docs/facets.md): a dot path of keys into the run's params.
PARAM_PATH = r"[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,7}"
PARAM_PREFIX = "param."


class RunFilters(Page):
    """Every filter of the runs list (also the facets'): OR within a field, AND across."""

    # Query names `param.<path>` parse into `param` ({path: values}); OpenAPI lists
    # them as a pattern. Class-level, so msgspec does not take it for a field.
    prefixed: ClassVar[dict[str, str]] = {PARAM_PREFIX: "param"}

    status: AnyStatus = []
    model: AnyText = []
    hardware: AnyText = []
    batch_id: AnyText = []
    name: AnyText = []
    tag: Annotated[list[TagFilter], Meta(
        max_length=MAX_TAG_FILTERS,
        description=f"key:value, repeatable (all must match), at most {MAX_TAG_FILTERS}")] = []
    since: Time | None = None
    until: Time | None = None
    q: Annotated[Text, Meta(description="substring of the run id, name or model")] | None = None
    param: dict[str, list[str]] = {}

    def tags(self) -> list[tuple[str, str]]:
        return [(k, v) for k, _, v in (t.partition(":") for t in self.tag)]


class RunsQuery(RunFilters):
    sort: Annotated[RunSort, Meta(description="- for descending")] = "-created_at"
    next: NextToken | None = None


FACET_FIELDS = ["model", "hardware", "name", "status", "batch_id", "tag:<key>", "param:<path>"]
_FACET_FIELD = re.compile(r"(model|hardware|name|status|batch_id|tag:.+|param:" + PARAM_PATH + ")")
# The pattern is the document's; check_facet_field enforces it with a message that
# lists the forms (a pattern in the Struct would answer with the regex instead).
FacetField = Annotated[str, Meta(min_length=1, max_length=MAX_PARAM_CHARS,
                                 description=", ".join(FACET_FIELDS),
                                 extra_json_schema={"pattern": f"^{_FACET_FIELD.pattern}$"})]


def check_facet_field(field: str) -> None:
    """A 400 naming `field` and its forms unless it is one of FACET_FIELDS."""
    if not _FACET_FIELD.fullmatch(field):
        raise bad_param("field", f"must be one of {', '.join(FACET_FIELDS)} (a <path> is up "
                                 "to 8 keys of letters, digits, _ or - joined by dots)",
                        FACET_FIELDS)


class FacetsQuery(RunFilters, kw_only=True):
    field: FacetField
    limit: Annotated[int, Meta(ge=1, le=MAX_LIMIT, description="top values to list")] = 10


class RunMetricsQuery(LongPage):
    name: Annotated[Text, Meta(description="metric name")] | None = None
    next: NextToken | None = None


class RunLogsQuery(LongPage):
    level: LogLevel | None = None
    next: NextToken | None = None


class RunResultsQuery(LongPage):
    outcome: Outcome | None = None
    next: NextToken | None = None


class PerformanceQuery(LongPage):
    days: Annotated[int, Meta(ge=1, le=3660, description="window in UTC days, today included")] = 30
    model: Text | None = None
    hardware: Text | None = None
    metric: Annotated[Text, Meta(description="metric name")] | None = None
    next: NextToken | None = None
    trend: Annotated[Literal["true", "false"], Meta(
        description="false: each item's `trend` is empty (not computed), for a reader of "
                    "the figures alone, e.g. a heatmap of p50")] = "true"


SearchLimit = Annotated[int, Meta(ge=1, le=MAX_LIMIT, description="results per component")]


class SearchQuery(ReadQuery, kw_only=True):
    query: Annotated[Text, Meta(description="text to find (case-insensitive substring)")]
    limit: SearchLimit = 20


class SearchPostQuery(ReadQuery):
    """POST search: the query in the URL, or in a JSON body (`SearchBody`, which wins)."""

    query: Annotated[Text, Meta(description="text to find, unless the body gives it")] | None = None
    limit: SearchLimit | None = None


class SearchBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    query: Text
    # 20 unless the URL gives it. A number, so 20.0 is taken as JSON Schema's integer is.
    limit: Annotated[float, Meta(ge=1, le=MAX_LIMIT, multiple_of=1,
                                 description="results per component")] | None = None


# -- parsing --------------------------------------------------------------------


def bad_param(name: str, message: str, allowed: list[str] | None = None) -> BadRequest:
    """The 400 for query parameter `name`."""
    detail: dict[str, Any] = {"parameter": name, "message": message}
    if allowed is not None:
        detail["allowed"] = allowed
    return BadRequest(f"query parameter {name!r} {message}", [detail])


@dataclass(frozen=True)
class _Field:
    many: bool  # a list: the parameter may repeat
    kind: type  # int, datetime or str (Literals are str)
    allowed: list[str] | None  # a Literal's values
    csv: bool = False  # a list that also takes comma-separated values


def _csv(t: Any) -> bool:
    """Whether `t` is Annotated with Meta(extra={"csv": True})."""
    return typing.get_origin(t) is Annotated and any(
        isinstance(m, Meta) and (m.extra or {}).get("csv") for m in typing.get_args(t)[1:])


_COMMA = re.compile(r"(?<!\\),")


def split_values(raw: str) -> list[str]:
    """`a,b\\,c` as ["a", "b,c"]: commas separate values, a backslash-escaped one is kept."""
    return [v.replace("\\,", ",") for v in _COMMA.split(raw)]


def _strip(t: Any) -> Any:
    """`Annotated[X, ...]` and `X | None` as X."""
    while True:
        if typing.get_origin(t) is Annotated:
            t = typing.get_args(t)[0]
        elif typing.get_origin(t) in (types.UnionType, typing.Union):
            t = next(a for a in typing.get_args(t) if a is not type(None))
        else:
            return t


def _field(t: Any) -> _Field:
    csv = _csv(t)
    t = _strip(t)
    many = typing.get_origin(t) is list
    if many:
        t = _strip(typing.get_args(t)[0])
    if typing.get_origin(t) is Literal:
        return _Field(many, str, [str(a) for a in typing.get_args(t)], csv)
    return _Field(many, t, None, csv)


@functools.cache
def _fields(struct: type[NoQuery]) -> dict[str, _Field]:
    """The fields a query name may name (those filled from prefixed names are not)."""
    targets = set(_prefixed(struct).values())
    return {f.name: _field(f.type) for f in msgspec.structs.fields(struct)
            if f.name not in targets}


def _prefixed(struct: type[NoQuery]) -> dict[str, str]:
    return getattr(struct, "prefixed", {})


_PARAM_PATH = re.compile(PARAM_PATH)


def _prefixed_values(query: MultiMapping[str], struct: type[NoQuery]
                     ) -> tuple[set[str], dict[str, dict[str, list[str]]]]:
    """The query names taken by a prefix (`param.<path>`) and their values by field:
    {field: {path: [values]}}; a bad path or too many is a 400 naming the parameter."""
    taken: set[str] = set()
    out: dict[str, dict[str, list[str]]] = {}
    for prefix, target in _prefixed(struct).items():
        for name in dict.fromkeys(n for n in query if n.startswith(prefix)):
            path = name.removeprefix(prefix)
            if not _PARAM_PATH.fullmatch(path):
                raise bad_param(name, f"must be {prefix}<path>: up to 8 keys of letters, "
                                      "digits, _ or - joined by dots, e.g. param.prompt")
            values = query.getall(name)
            for v in values:
                _scalar(name, v, str)
            taken.add(name)
            out.setdefault(target, {})[path] = values
        if len(out.get(target, {})) > MAX_PARAM_FILTERS:
            raise bad_param(prefix + "<path>", f"may name at most {MAX_PARAM_FILTERS} paths")
    return taken, out


_INT = re.compile(r"-?[0-9]{1,20}")


def _scalar(name: str, raw: str, kind: type) -> Any:
    if len(raw) > MAX_PARAM_CHARS:
        raise bad_param(name, f"must be at most {MAX_PARAM_CHARS} characters")
    if kind is int:
        if not _INT.fullmatch(raw):
            raise bad_param(name, "must be an integer (ASCII digits)")
        return int(raw)
    if kind is datetime:
        try:
            return msgspec.json.decode(msgspec.json.encode(raw), type=datetime)
        except msgspec.ValidationError:
            raise bad_param(name, "must be an RFC 3339 time with a timezone, "
                                  "e.g. 2026-01-31T00:00:00Z") from None
    return raw


def parse_query(query: MultiMapping[str], struct: type[Q]) -> Q:
    """`query` as a `struct`, or a 400 naming the first bad parameter."""
    fields = _fields(struct)
    taken, prefixed = _prefixed_values(query, struct)
    unknown = sorted(set(query) - set(fields) - taken)
    if unknown:
        allowed = sorted([*fields, *(f"{p}<path>" for p in _prefixed(struct))])
        takes = ", ".join(allowed) if allowed else "no query parameters"
        raise BadRequest(
            f"unknown query parameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; this route takes: {takes}",
            [{"parameter": n, "message": "unknown parameter", "allowed": allowed}
             for n in unknown])
    raw: dict[str, Any] = dict(prefixed)
    for name, field in fields.items():
        values = query.getall(name, [])
        if not values:
            continue
        if field.csv:
            values = [v for raw_value in values for v in split_values(raw_value)]
        if not field.many and len(values) > 1:
            raise bad_param(name, "may be given once")
        if field.allowed is not None:
            for v in values:
                if v not in field.allowed:
                    raise bad_param(name, f"must be one of {', '.join(field.allowed)}",
                                    field.allowed)
        parsed = [_scalar(name, v, field.kind) for v in values]
        raw[name] = parsed if field.many else parsed[0]
    try:
        return msgspec.convert(raw, struct)
    except msgspec.ValidationError as e:
        path, reason = split_error(e)
        reason = reason[:1].lower() + reason[1:]
        if path is None:
            raise BadRequest(f"query: {reason}", [{"parameter": None, "message": reason}]) from None
        name = re.split(r"[.\[]", path, maxsplit=1)[0]  # tag[3] is the parameter tag
        raise bad_param(name, reason, fields[name].allowed if name in fields else None) from None


B = TypeVar("B")
JSON_MEDIA = "application/json"


def decode_body(request: web.Request, body: bytes, struct: type[B]) -> B:
    """A JSON request body as `struct`: 415 unless it is JSON (a missing
    Content-Type means JSON), 400 naming the field otherwise."""
    if "Content-Type" in request.headers:
        if request.content_type != JSON_MEDIA:
            raise UnsupportedMediaType(
                f"Content-Type {request.content_type!r} is not accepted; use {JSON_MEDIA}")
        if (charset := request.charset) is not None and charset.lower() not in ("utf-8", "utf8"):
            raise UnsupportedMediaType(f"charset {charset!r} is not accepted; send UTF-8")
    try:
        return msgspec.json.decode(body, type=struct)
    except msgspec.DecodeError as e:
        field, reason = split_error(e)
        where = f"field {field!r}" if field else "body"
        raise BadRequest(f"request body: {where}: {reason}",
                         [{"field": field, "message": reason}]) from None
    except (UnicodeDecodeError, RecursionError) as e:  # msgspec lets these through
        raise BadRequest(f"request body is not valid JSON: {e}",
                         [{"field": None, "message": str(e)}]) from None


# Every path parameter any route uses: its type (checked before the handler runs)
# and its description, for OpenAPI.
PATH_PARAMS: dict[str, tuple[Any, str]] = {
    "component": (Annotated[str, Meta(pattern=SLUG_PATTERN)],
                  "the component, a slug like `test` or `generator`"),
    "run_id": (Annotated[str, Meta(min_length=1, max_length=256)], "the run id"),
    "batch_id": (Annotated[str, Meta(min_length=1, max_length=256)], "the batch id"),
    "model": (Annotated[str, Meta(min_length=1, max_length=256)], "the model name"),
    "job_id": (Annotated[str, Meta(min_length=1, max_length=256)], "the job id (its run id)"),
    "name": (Annotated[str, Meta(min_length=1, max_length=1024)], "the test's name"),
}


def check_path(request: web.Request) -> None:
    """Every path parameter of the matched route against PATH_PARAMS (400 if bad)."""
    for name, value in request.match_info.items():
        t = PATH_PARAMS.get(name)
        if t is None:
            continue
        try:
            msgspec.convert(value, t[0])
        except msgspec.ValidationError as e:
            reason = str(e).removesuffix(" - at `$`")
            raise BadRequest(f"{name} {value!r} in the URL is not valid: {reason}",
                             [{"parameter": name, "message": reason}]) from None


# -- the job runner (docs/compat.md "Job runner") ---------------------------------


class JobsQuery(KeysetPage):
    """GET /api/jobs: a page of jobs, newest first."""


class JobLogsQuery(KeysetLongPage):
    """GET /api/jobs/{job_id}/logs: a page of the job's log lines, oldest first."""


class RunMetricBucketsQuery(ReadQuery, kw_only=True):
    """One metric of a run in at most `buckets` buckets (docs/dashboard.md)."""

    name: Annotated[Text, Meta(description="metric name")]
    buckets: Annotated[int, Meta(ge=1, le=2000, description="at most this many buckets of "
                                                            "consecutive points")] = 1000


class ReportQuery(NoQuery):
    """A test report's run (issue 20, docs/tests.md): each attribute optional; the run
    id defaults to one derived from the report's content."""

    run_id: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    model: Text | None = None
    hardware: Text | None = None
    batch_id: Text | None = None
    name: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    tag: Annotated[list[TagFilter], Meta(
        max_length=MAX_TAG_FILTERS,
        description="key:value, a tag on the run, repeatable (commit:abc123, branch:main)")] = []

    def tags(self) -> list[tuple[str, str]]:
        return [(k, v) for k, _, v in (t.partition(":") for t in self.tag)]


TestSort = Literal[
    "flakiness", "-flakiness", "failure_rate", "-failure_rate", "duration", "-duration",
    "last_seen", "-last_seen", "test", "-test"]


class TestsQuery(KeysetPage):
    """GET /api/{component}/db/tests (issue 20): `-` sorts descending."""

    flaky: Annotated[Literal["true", "false"], Meta(
        description="true: only tests flaky by definition (a); false: only those not")
    ] | None = None
    failing: Annotated[Literal["true", "false"], Meta(
        description="true: only tests whose last result failed or errored; false: the others")
    ] | None = None
    q: Annotated[Text, Meta(description="substring of the test name")] | None = None
    sort: TestSort = "-last_seen"


class TestQuery(ReadQuery):
    """GET /api/{component}/db/test/{name}: `history` is how many of its latest results
    (every attempt) the strip shows."""

    history: Annotated[int, Meta(ge=1, le=MAX_LIMIT)] = 30


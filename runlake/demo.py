"""Deterministic, realistic synthetic events (DESIGN §1) for `runlake demo` and the benchmarks.

The stream depends only on (runs, seed, now): one `random.Random(seed)` drives everything.
`post_batches` and `wait_folded` send it to a running server (`runlake demo --url`) with
the standard library alone, since the server holds the log a demo would otherwise append to.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

import msgspec

from runlake.errors import RunlakeError

__all__ = ["drop_parquet", "generate", "ndjson_batches", "post_batches", "wait_folded"]

DAY_MS = 86_400_000
SPAN_MS = 60 * DAY_MS  # history covers the 60 days before `now`
LATE_P = 0.01  # share of events held back and emitted out of order
INFLIGHT_P = 0.02  # runs left without a terminal status
EPOCH_P = 0.08  # runs whose client sends epoch-second floats instead of RFC 3339
BATCH_P = 0.05  # a group is a batch (5–50 runs) with this chance: ~60 % of runs in batches
COMPONENTS = ("test", "generator", "benchmark")
COMPONENT_SHARE = (0.3, 0.4, 0.3)

# fmt: off
# Data tables stay hand-packed (ruff format would spread them one item per line).
# "name billions-of-parameters kind", most popular first: popularity is Zipf-ish by rank.
MODELS = [(n, float(s), k) for n, s, k in (e.split() for e in """
llama-3.1-8b-instruct 8 llm|mistral-7b-v0.3 7.2 llm|qwen2.5-7b-instruct 7.6 llm|gpt2-xl 1.5 llm
phi-3-mini 3.8 llm|gemma-2-9b 9.2 llm|stable-diffusion-xl 3.5 image|whisper-large-v3 1.55 audio
llama-3.1-70b-instruct 70 llm|qwen2.5-14b 14.7 llm|mixtral-8x7b-instruct 47 llm
musicgen-medium 1.5 music|llama-3.2-3b-instruct 3.2 llm|gemma-2-2b-it 2.6 llm
qwen2.5-coder-7b 7.6 llm|deepseek-coder-6.7b 6.7 llm|tinyllama-1.1b 1.1 llm|gpt2 0.124 llm
mistral-nemo-12b 12 llm|qwen2.5-72b-instruct 72.7 llm|llama-3.2-1b 1.2 llm|phi-3-medium 14 llm
gemma-2-27b 27 llm|flux.1-schnell 12 image|whisper-small 0.244 audio|sdxl-turbo 3.5 image
llava-1.5-7b 7 vision|bge-large-en-v1.5 0.335 embed|qwen2.5-32b-instruct 32.5 llm
codellama-7b 7 llm|starcoder2-15b 15 llm|llama-2-7b-chat 7 llm|llama-2-13b-chat 13 llm
mistral-7b-instruct-v0.2 7.2 llm|musicgen-small 0.3 music|musicgen-large 3.3 music
stable-diffusion-v1-5 0.98 image|stable-diffusion-3-medium 2 image
clip-vit-large-patch14 0.43 vision|e5-mistral-7b 7.1 embed|qwen2.5-1.5b-instruct 1.5 llm
qwen2.5-0.5b 0.5 llm|phi-2 2.7 llm|phi-3.5-moe 42 llm|gemma-7b 8.5 llm|gemma-2b 2.5 llm
yi-1.5-9b 8.8 llm|olmo-7b 7 llm|falcon-7b 7 llm|falcon-40b 40 llm|codellama-34b 34 llm
command-r-35b 35 llm|deepseek-v2-lite 16 llm|mixtral-8x22b 141 llm
llama-3.1-405b-instruct 405 llm|gpt2-medium 0.355 llm|gpt2-large 0.774 llm|opt-1.3b 1.3 llm
pythia-1.4b 1.4 llm|bloom-560m 0.56 llm|flan-t5-xl 2.8 llm|t5-base 0.22 llm
bert-base-uncased 0.11 embed|roberta-large 0.355 embed|all-minilm-l6-v2 0.023 embed
whisper-tiny 0.039 audio|bark 0.9 audio|blip-2 3.9 vision|vit-base-patch16-224 0.086 vision
""".replace("\n", "|").split("|") if e)]
MODEL_CUM = list(itertools.accumulate(1 / (r + 1) ** 1.1 for r in range(len(MODELS))))
# (name, relative speed, holds models above 40 B parameters), most popular first.
HARDWARE = [
    ("nvidia-a100-80gb", 2.0, True), ("nvidia-h100", 3.2, True), ("nvidia-l4", 0.8, False),
    ("nvidia-t4", 0.4, False), ("amd-mi300x", 2.8, True), ("apple-m3-max", 0.5, False),
    ("cpu-xeon-8480", 0.12, False), ("google-tpu-v5e", 1.6, True),
]
HW_CUM = list(itertools.accumulate((30, 22, 14, 9, 8, 7, 5, 5)))
STEPS = {
    "test": "checkout install lint unit-tests integration-tests e2e-tests coverage report".split(),
    "generator": "load-model warmup tokenize generate decode postprocess upload cleanup".split(),
    "benchmark": "provision load-model warmup run-benchmark collect-metrics evaluate report "
                 "teardown".split(),
}
SUITES = "smoke nightly regression full gpu".split()
# Tasks per model kind, for generator and benchmark runs (test runs use SUITES).
GEN_TASKS = {"llm": "chat summarization codegen translation", "vision": "captioning vqa",
             "image": "text-to-image image-to-image", "audio": "transcription text-to-speech",
             "music": "text-to-music continuation", "embed": "embedding reranking"}
BENCH_TASKS = {"llm": "mmlu gsm8k humaneval hellaswag arc-challenge mt-bench inference-latency",
               "image": "fid-coco clip-score inference-latency", "music": "fad-musiccaps",
               "audio": "librispeech-wer common-voice-wer", "embed": "mteb-retrieval mteb-sts",
               "vision": "imagenet-top1 coco-caption vqav2"}
# metric -> (unit, is a series with an integer `step`); values come from _metric.
METRICS = {
    "latency_ms": ("ms", False), "ttft_ms": ("ms", False), "throughput_tok_s": ("tok/s", False),
    "memory_gb": ("GB", False), "loss": ("nats", True), "accuracy": ("ratio", True),
    "gpu_util_pct": ("%", False), "tokens_generated": ("tokens", False),
    "coverage_pct": ("%", False), "power_w": ("W", False),
}
COMP_METRICS = {
    "test": "latency_ms latency_ms memory_gb coverage_pct ttft_ms".split(),
    "generator": "latency_ms ttft_ms throughput_tok_s memory_gb tokens_generated gpu_util_pct "
                 "loss".split(),
    "benchmark": "latency_ms throughput_tok_s accuracy loss memory_gb ttft_ms gpu_util_pct "
                 "power_w".split(),
}
DURATION = {"test": (90.0, 1.0), "generator": (300.0, 1.2), "benchmark": (1200.0, 1.0)}
TAGS = {  # the repeated "main" makes it the usual branch
    "team": "ml-infra research eval platform audio applied-ml".split(),
    "branch": "main main main dev release/1.4 feature/fast-kv-cache fix/oom-retry".split(),
    "suite": SUITES, "owner": "alice bob chen dana emeka farah gus".split(),
    "env": "ci staging prod dev-laptop".split(),
}
ERRORS = (
    "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.15 GiB total capacity)",
    "AssertionError: expected 200, got 500", "TimeoutError: step exceeded 3600 s",
    "NCCL error: unhandled system error", "OSError: [Errno 28] No space left on device",
    "RuntimeError: expected scalar type BFloat16 but found Float",
    "ConnectionResetError: [Errno 104] Connection reset by peer",
    "KeyError: 'model.layers.31.mlp.gate_proj.weight'",
)
TEST_FAILS = ("AssertionError: assert 500 == 200", "AssertionError: assert 0.97 >= 0.99",
              "TimeoutError: no response after 30 s", "KeyError: 'run_id'",
              "ValueError: NaN in metric value")
TEST_FILES = "api fold log views search inbox auth export replay".split()
TEST_FUNCS = ("create_run list_runs delete_batch append_durable out_of_order idempotent_ids "
              "percentiles rejects_bad_event roundtrip pagination").split()
INFO_LOGS = ("loaded {m} in {x:.1f} s", "using device {h}", "checkpoint saved (step {i})",
             "processed {i} items", "cache hit ratio {x:.2f}")
WARN_LOGS = ("falling back to eager attention on {h}", "retrying download (attempt 2/5)",
             "slow step: {x:.1f} s above budget", "tokenizer has no pad token, using eos")
PARAMS = {  # keyed by comp == "test"
    False: {"batch_size": (1, 4, 8, 16, 32), "seq_len": (512, 1024, 2048, 4096, 8192),
            "precision": ("bf16", "bf16", "fp16", "fp8", "int8", "int4")},
    True: {"python": ("3.10", "3.11", "3.12"), "workers": (1, 2, 4, 8)},
}
OUTCOMES = ["passed"] * 185 + ["skipped"] * 10 + ["xfailed"] * 4 + ["xpassed"]  # by int(u * 200)
ARTIFACTS = (("report.html", "text/html"), ("outputs.jsonl", "application/x-ndjson"),
             ("junit.xml", "application/xml"), ("metrics.json", "application/json"),
             ("sample.png", "image/png"), ("sample.wav", "audio/wav"))

# fmt: on

_KEY = itemgetter(0)
_PREFIX: dict[int, str] = {}  # minute -> "YYYY-MM-DDTHH:MM:"


def _rfc3339(ms: int) -> str:
    # Hand-rolled with a per-minute prefix cache: datetime formatting would eat half the budget.
    minute, rem = divmod(ms, 60_000)
    prefix = _PREFIX.get(minute)
    if prefix is None:
        if len(_PREFIX) > 100_000:
            _PREFIX.clear()
        prefix = _PREFIX[minute] = time.strftime("%Y-%m-%dT%H:%M:", time.gmtime(minute * 60))
    sec, milli = divmod(rem, 1000)
    return f"{prefix}{sec:02d}.{milli:03d}Z"


def _metric(rng: random.Random, name: str, size: float, speed: float, i: int) -> float:
    """A value that scales with model size and hardware speed, so reports show real spread."""
    rnd = rng.random
    noise = math.exp(0.5 * (rnd() + rnd() + rnd() - 1.5))  # ~lognormal(0, 0.25), 3x cheaper
    if name == "latency_ms":
        v = 6.0 * (1 + size) ** 0.8 / speed * noise
    elif name == "ttft_ms":
        v = 25.0 + 12.0 * (1 + size) ** 0.9 / speed * noise
    elif name == "throughput_tok_s":
        v = 3000.0 * speed / (1 + size) ** 0.8 * noise
    elif name == "memory_gb":
        v = min(190.0, 1.2 + 2.1 * size * noise)
    elif name == "loss":
        v = 0.9 + 2.4 * math.exp(-i / 5) * noise
    elif name == "accuracy":
        v = min(0.99, (0.3 + 0.1 * math.log1p(size) + 0.01 * i) * noise**0.3)
    elif name == "tokens_generated":
        return float(rng.randint(16, 2048))
    elif name == "power_w":
        v = 90.0 + 150.0 * speed * noise
    else:  # percentages
        v = min(100.0, 55.0 + 30.0 * rnd() * noise)
    return round(v, 3)


def _run(
    rng: random.Random, idx: int, comp: str, batch: dict[str, Any] | None, t0: int, now_ms: int
) -> list[tuple[int, dict[str, Any]]]:
    """All events of one run as (ts_ms, event); `ts` holds int ms until it is emitted."""
    rid = f"run-{idx:06d}-{rng.getrandbits(24):06x}"
    hw, speed, big_ok = (batch and batch["hw"]) or rng.choices(HARDWARE, cum_weights=HW_CUM)[0]
    model = batch and batch["model"]
    while not model or (model[1] > 40 and not big_ok):  # a 70 B model does not fit on a T4
        model = rng.choices(MODELS, cum_weights=MODEL_CUM)[0]
    mname, size, kind = model
    evs: list[tuple[int, dict[str, Any]]] = []

    def add(typ: str, ms: int, **f: Any) -> None:
        evs.append((ms, {"type": typ, "component": comp, "run_id": rid, "ts": ms, **f}))

    params = {k: rng.choice(v) for k, v in PARAMS[comp == "test"].items()}
    if comp == "test":
        task = params["suite"] = rng.choice(SUITES)
    else:
        task = rng.choice((GEN_TASKS if comp == "generator" else BENCH_TASKS)[kind].split())
    run = {"model": mname, "hardware": hw, "name": f"{task} {mname}", "params": params}
    add("run", t0, **run, **({"batch_id": batch["batch_id"]} if batch else {}))
    for key in rng.sample(list(TAGS), rng.randint(1, 3)):
        add("tag", t0 + 1, key=key, value=rng.choice(TAGS[key]))
    if rng.random() < 0.2:
        add("tag", t0 + 1, key="commit", value=f"{rng.getrandbits(28):07x}")
    add("status", t0 + 2, status="pending")

    med, sd = DURATION[comp]
    scale = 1.0 if comp == "test" else (0.5 + size / 30) ** 0.5  # big models run longer
    dur = int(1000 * min(8 * 3600, max(3.0, rng.lognormvariate(math.log(med * scale), sd))))
    t1 = t0 + 3 + int(1000 * min(1800.0, rng.lognormvariate(math.log(5.0), 1.5)))  # queued
    if t1 + dur > now_ms:  # the newest runs are squeezed to finish before `now`
        t1 = min(t1, t0 + 3 + (now_ms - t0 - 3) // 2)
        dur = max(0, int((now_ms - t1) * 0.95))
    add("status", t1, status="running")

    r = rng.random()
    outcome = "completed" if r < 0.85 else "failed" if r < 0.97 else "cancelled"
    names = STEPS[comp]
    steps = [names[j] for j in sorted(rng.sample(range(len(names)), rng.randint(3, 8)))]
    weights = [rng.random() + 0.2 for _ in steps]
    stop = rng.randrange(len(steps)) if outcome != "completed" else len(steps)
    error = rng.choice(ERRORS)
    t, total = t1, sum(weights)
    for j, (step, w) in enumerate(zip(steps, weights, strict=True)):
        d = int(dur * w / total)
        msg = {"message": f"starting {step}"} if rng.random() < 0.3 else {}
        add("step", t, step=step, status="running", **msg)
        if j == stop and outcome == "failed":
            t += d
            add(
                "step",
                t,
                step=step,
                status="failed",
                progress=round(rng.random(), 2),
                message=error,
            )
            break
        if j == stop:  # cancelled mid-step: it and the rest are skipped
            t += int(d * rng.random())
            for rest in steps[j:]:
                add("step", t, step=rest, status="skipped", message="run cancelled")
            break
        t += d
        add("step", t, step=step, status="completed", **({"progress": 1.0} if j % 2 else {}))
    end, span = t, max(1, t - t1)

    # Hot loops below build dicts inline and index with rnd(): rng.choice costs 3x more.
    rnd, mnames = rng.random, COMP_METRICS[comp]
    series: dict[str, int] = {}  # metric name -> last step index
    for ms in sorted(t1 + int(span * rnd()) for _ in range(5 + int(15 * rnd() ** 2))):
        name = mnames[int(rnd() * len(mnames))]
        unit, stepped = METRICS[name]
        i = series[name] = series.get(name, -1) + 1
        ev = {"type": "metric", "component": comp, "run_id": rid, "ts": ms, "name": name}
        ev["value"], ev["unit"] = _metric(rng, name, size, speed, i), unit
        if stepped:
            ev["step"] = i * 100
        evs.append((ms, ev))
    if comp == "test":
        fails = rng.randint(1, 3) if outcome == "failed" else 0
        for k in range(3 + int(17 * rnd() ** 2)):
            test = (
                f"tests/test_{TEST_FILES[int(rnd() * len(TEST_FILES))]}.py::"
                f"test_{TEST_FUNCS[int(rnd() * len(TEST_FUNCS))]}"
            )
            if rnd() < 0.4:
                test += f"[case{int(rnd() * 8)}]"
            ms, o = t1 + int(span * rnd()), rnd()
            res = {"type": "result", "component": comp, "run_id": rid, "ts": ms, "test": test}
            res["outcome"], res["duration_s"] = OUTCOMES[int(o * 200)], round(rng.expovariate(8), 4)
            if k < fails:
                res["outcome"] = "error" if o < 0.2 else "failed"
                res["message"] = TEST_FAILS[int(rnd() * len(TEST_FAILS))]
            evs.append((ms, res))
    fmt = {"m": mname, "h": hw}
    for _ in range(rng.randint(0, 2)):
        msg = rng.choice(INFO_LOGS).format(x=rnd() * 60, i=rng.randint(1, 5000), **fmt)
        add("log", t1 + int(span * rnd()), level="debug" if rnd() < 0.1 else "info", message=msg)
    if rnd() < 0.15:
        msg = rng.choice(WARN_LOGS).format(x=rnd() * 60, **fmt)
        add("log", t1 + int(span * rnd()), level="warning", message=msg)
    for aname, media in rng.sample(ARTIFACTS, rng.randint(0, 2)):
        ms, uri = max(t1, end - rng.randint(0, 5000)), f"s3://runlake-artifacts/{comp}/{rid}"
        art = {
            "uri": f"{uri}/{aname}",
            "size_bytes": int(10 ** (3 + 6 * rnd())),
            "media_type": media,
        }
        add("artifact", ms, name=aname, **art)

    if rnd() < INFLIGHT_P:  # still running at `now`: cut the timeline, no terminal status
        cutoff = t1 + int(span * rng.uniform(0.1, 0.9))
        evs = [e for e in evs if e[0] <= cutoff]
    elif outcome == "failed":
        add("log", end, level="critical" if rnd() < 0.1 else "error", message=error)
        add("status", end, status="failed", error=error)
    else:
        add("status", end, status=outcome)
    if rnd() < EPOCH_P:
        for _, e in evs:
            e["ts"] = e["ts"] / 1000
    return evs


def _batch(
    rng: random.Random, comp: str, n: int, ts: int, size: int
) -> tuple[dict[str, Any], tuple[int, dict[str, Any]]]:
    """A batch shares a hardware (a model sweep) or a model (a hardware sweep), or neither."""
    bid = f"batch-{n:05d}-{rng.getrandbits(24):06x}"
    model, hw, desc = None, None, f"{rng.choice(SUITES)} {comp} batch"
    r = rng.random()
    if r < 0.4:
        hw = rng.choices(HARDWARE, cum_weights=HW_CUM)[0]
        desc = f"{comp} model sweep on {hw[0]}"
    elif r < 0.7:
        model = rng.choices(MODELS[:20], cum_weights=MODEL_CUM[:20])[0]
        hw = HARDWARE[0] if model[1] > 40 else None  # keep big models on big iron
        desc = f"{comp} hardware sweep for {model[0]}"
    ev = {"type": "batch", "component": comp, "ts": ts, "batch_id": bid, "description": desc}
    ev["expected_count"] = size + (rng.randint(1, 3) if rng.random() < 0.1 else 0)  # stragglers
    return {"batch_id": bid, "model": model, "hw": hw}, (ts, ev)


def _finish(ev: dict[str, Any], n: int, seed: int, with_ids: bool) -> dict[str, Any]:
    ts = ev["ts"]
    if ts.__class__ is int:
        ev["ts"] = _rfc3339(ts)
    if with_ids:
        ev["id"] = f"demo-{seed}-{n}"
    return ev


def generate(
    runs: int, seed: int = 0, now: float | None = None, *, with_ids: bool = False
) -> Iterator[dict[str, Any]]:
    """Yield wire-format events for `runs` runs, roughly in time order (≈1 % emitted late).

    `now` (epoch seconds) defaults to today 00:00 UTC; all events fall in the 60 days before it.
    """
    rng = random.Random(seed)
    now_ms = int(1000 * (time.time() // 86400 * 86400 if now is None else now))
    start, slot = now_ms - SPAN_MS, SPAN_MS / max(1, runs)
    buf: list[tuple[int, dict[str, Any]]] = []  # (ts_ms, event), not yet emitted
    late: list[tuple[int, int, dict[str, Any]]] = []  # (release at emitted count, tiebreak, event)
    tick = itertools.count()
    emitted = 0

    def flush(limit: float) -> Iterator[dict[str, Any]]:
        # A stable sort of the buffer beats a heap: it is mostly sorted already (Timsort runs).
        nonlocal buf, emitted
        buf.sort(key=_KEY)
        cut = bisect.bisect_left(buf, limit, key=_KEY)
        ready, buf = buf[:cut], buf[cut:]
        for _, ev in ready:
            if rng.random() < LATE_P and ev["type"] != "batch":  # batches precede their runs
                heapq.heappush(late, (emitted + rng.randint(20, 3000), next(tick), ev))
                continue
            while late and late[0][0] <= emitted:
                yield _finish(heapq.heappop(late)[2], emitted, seed, with_ids)
                emitted += 1
            ts = ev["ts"]  # _finish inlined: this line runs once per event
            if ts.__class__ is int:
                ev["ts"] = _rfc3339(ts)
            if with_ids:
                ev["id"] = f"demo-{seed}-{emitted}"
            emitted += 1
            yield ev
        while limit == math.inf and late:
            yield _finish(heapq.heappop(late)[2], emitted, seed, with_ids)
            emitted += 1

    left, batch, nbatch, k, per_comp = 0, None, 0, 0, [0, 0, 0]
    for idx in range(runs):
        # Jittered grid: start times ascend; the cap leaves the newest run a minute to run.
        t0 = min(int(start + slot * (idx + rng.random())), now_ms - 60_000)
        if idx % 64 == 0:  # later runs start after t0, so everything before t0 is final
            yield from flush(t0)
        if left == 0:
            # Half the groups go to the most under-represented component: batches of up to 50
            # runs would otherwise make the 30/40/30 mix drift badly on small streams.
            if rng.random() < 0.5:
                k = max(range(3), key=lambda c: COMPONENT_SHARE[c] * idx - per_comp[c])
            else:
                k = rng.choices(range(3), weights=COMPONENT_SHARE)[0]
            comp, batch, left = COMPONENTS[k], None, 1
            if rng.random() < BATCH_P:
                left = rng.randint(5, 50)
                batch, bev = _batch(rng, comp, nbatch, t0 - rng.randint(100, 60_000), left)
                buf.append(bev)
                nbatch += 1
        buf += _run(rng, idx, comp, batch, t0, now_ms)
        per_comp[k] += 1
        left -= 1
    yield from flush(math.inf)


def ndjson_batches(
    runs: int,
    seed: int = 0,
    now: float | None = None,
    batch_size: int = 1000,
    *,
    with_ids: bool = False,
) -> Iterator[bytes]:
    """The `generate` stream as NDJSON chunks of `batch_size` events (each line ends in \\n)."""
    enc = msgspec.json.Encoder()
    it = generate(runs, seed, now, with_ids=with_ids)
    while chunk := list(itertools.islice(it, batch_size)):
        yield enc.encode_lines(chunk)


def drop_parquet(inbox: Path, events: int, per_file: int = 100_000, seed: int = 5) -> None:
    """Drop `events` events into `inbox` as Parquet files of `per_file` (the log's
    schema), fast: 1 000 demo runs tiled with fresh run and batch ids, since
    generating the runs one by one takes ~11 s per million events."""
    import pyarrow as pa  # here: the demo's event stream itself needs neither
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from runlake.events import decode_events, events_to_table

    lines = msgspec.json.Encoder().encode_lines(list(generate(1000, seed=seed)))
    base = events_to_table(decode_events(lines, ndjson=True), 0, 0)
    tiles: list[pa.Table] = []
    for k in range(-(-events // base.num_rows)):  # enough whole tiles
        tile = base
        for col in ("run_id", "batch_id"):
            i = tile.schema.get_field_index(col)
            suffixed = pc.binary_join_element_wise(tile.column(col), pa.scalar(f"-t{k}"), "")
            tile = tile.set_column(i, tile.schema.field(col), suffixed)
        tiles.append(tile)
    table = pa.concat_tables(tiles).slice(0, events)
    inbox.mkdir(parents=True, exist_ok=True)
    for j, offset in enumerate(range(0, events, per_file)):
        tmp = inbox / f".part-{j}.tmp"  # written aside, then renamed: the inbox's rule
        pq.write_table(table.slice(offset, per_file), tmp)
        tmp.rename(inbox / f"bulk-{j:03d}.parquet")


# -- sending to a running server (`runlake demo --url`) ----------------------------

HTTP_TIMEOUT_S = 120.0  # one request; a server under load may take a while to answer
FOLD_WAIT_S = 300.0  # how long wait_folded keeps asking


def post_batches(url: str, chunks: Iterable[bytes], *, key: str | None = None,
                 sent: Callable[[int], None] | None = None) -> tuple[int, int]:
    """POST each NDJSON chunk to `url`'s /api/events, one after another; returns (events
    sent, last seq). `sent(n)` is called after each accepted chunk. Raises RunlakeError
    naming the server's answer if it refuses one (those before it stay appended)."""
    if not url.startswith(("http://", "https://")):
        raise RunlakeError(f"--url {url!r}: expected an http:// or https:// address, "
                           "e.g. http://127.0.0.1:8080")
    total, last = 0, 0
    for chunk in chunks:
        reply = _call(url, "/api/events", key, chunk)
        total += int(reply["accepted"])
        last = int(reply["last_seq"])
        if sent is not None:
            sent(int(reply["accepted"]))
    return total, last


def wait_folded(url: str, seq: int, *, key: str | None = None,
                timeout: float = FOLD_WAIT_S) -> bool:
    """Ask `url` until its fold has passed `seq` (each read with `min_seq` waits on the
    server, up to its read_wait_s), so what was sent is visible to the next read.
    False if not within `timeout` seconds, or if `key` may not read."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _call(url, f"/api/db/overview?min_seq={seq}", key)
            return True
        except _Refused as e:
            if e.status != 503 or time.monotonic() >= deadline:
                return False
            # 503: the fold is not there yet (the server already waited) or overloaded.
            time.sleep(min(e.retry_after, max(0.0, deadline - time.monotonic())))


class _Refused(RunlakeError):
    """The server answered with an error status."""

    def __init__(self, message: str, details: list[dict[str, Any]], status: int,
                 retry_after: float) -> None:
        super().__init__(message, details)
        self.status, self.retry_after = status, retry_after


def _call(url: str, path: str, key: str | None, body: bytes | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/x-ndjson"} if body is not None else {}
    if key:
        headers["X-API-Key"] = key
    request = urllib.request.Request(url.rstrip("/") + path, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            return msgspec.json.decode(response.read())
    except urllib.error.HTTPError as e:
        with e:
            raw = e.read()
        try:
            error = msgspec.json.decode(raw)["error"]
            message, details = str(error["message"]), list(error.get("details") or [])
        except (msgspec.DecodeError, KeyError, TypeError):
            message, details = raw.decode(errors="replace")[:500], []
        try:
            retry_after = float(e.headers.get("Retry-After", 1))
        except ValueError:
            retry_after = 1.0
        raise _Refused(f"{url} answered {e.code} to {path.split('?')[0]}: {message}",
                       details, e.code, retry_after) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise RunlakeError(f"cannot reach {url}: {reason}; is `runlake serve` running "
                           "there? (see its first line: 'runlake listening on ...')") from None

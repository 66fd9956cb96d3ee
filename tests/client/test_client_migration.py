"""docs/client.md's migration pairs, run against a real server: each old call of the
music storage service and the job runner beside its client equivalent."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from client_helpers import get_json
from helpers.server import serve_in_thread
from runlake_client import Client

PROMPTS = {"g1": "calm piano", "g2": "calm piano", "g3": "fast drums", "g4": "lofi beat"}


def test_music_storage_service_calls(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path) as server, Client(
            server.client.url, component="music", spool_dir=tmp_path / "spool") as client:
        # create_generation(prompt, model, params) -> generation id
        for gen_id, prompt in PROMPTS.items():
            client.create_run(gen_id, model="musicgen-small", name=prompt,
                              params={"prompt": prompt, "duration": 8})
        # mark_processing(id)
        for gen_id in ("g1", "g2", "g3"):
            client.run(gen_id).start()
        # complete_generation(id, audio_path, duration)
        audio = tmp_path / "g1.wav"
        audio.write_bytes(b"RIFF" + bytes(60))
        g1 = client.run("g1")
        g1.artifact("audio", path=audio, media_type="audio/wav")
        g1.metric("audio_duration_s", 8.0, unit="s")
        g1.complete()
        client.run("g2").complete()
        # mark_failed(id, error)
        client.run("g3").fail("CUDA out of memory")
        assert client.flush(60)

        # get_pending_generations(): oldest first
        pending = [r.run_id for r in client.runs(status="pending", sort="created_at")]
        assert pending == ["g4"]
        # get_database_stats()
        totals = client.overview().components["music"]
        assert totals.runs == 4
        assert {k: totals.by_status[k] for k in ("completed", "failed", "pending")} == {
            "completed": 2, "failed": 1, "pending": 1}
        # get_most_used_prompts(limit): the facet of the runs' prompt param
        used = Counter(r.params["prompt"] for r in client.runs() if r.params)
        top = client.facets("param:prompt", limit=1)
        assert [(i.value, i.runs) for i in top.items] == used.most_common(1)
        assert top.total_values == len(used) and not top.truncated
        g1_detail = client.get_run("g1")
        assert [(a.name, a.size_bytes) for a in g1_detail.artifacts] == [("audio", 64)]
        assert client.get_run("g3").error == "CUDA out of memory"


def test_job_runner_lifecycle(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path) as server, Client(
            server.client.url, component="jobs", spool_dir=tmp_path / "spool") as client:
        url = server.client.url
        out = tmp_path / "a.mp4"
        out.write_bytes(bytes(1000))
        job = client.create_run("job-42", name="ffmpeg", params={"input": "a.mov", "crf": 23})
        job.log("queued")
        with job:  # running, then completed
            job.output("frame=  100 fps=25\nframe=  200 fps=25")
            job.output("deprecated pixel format", stream="stderr")
            job.artifact("a.mp4", path=out)
            job.tag("return_code", "0")
        with pytest.raises(RuntimeError), client.run("job-43", name="sox"):
            raise RuntimeError("exit status 2")
        assert client.flush(60)
        seq = client._sender.last_seq

        old = get_json(url, "/api/jobs/job-42", min_seq=seq)
        assert old["tool_name"] == "ffmpeg" and old["status"] == "completed"
        assert old["parameters"] == {"input": "a.mov", "crf": 23}
        assert old["stdout"] == "frame=  100 fps=25\nframe=  200 fps=25"
        assert old["stderr"] == "deprecated pixel format"
        assert old["return_code"] == 0
        assert old["output_files"] == ["a.mp4"] and old["total_size"] == 1000
        assert [line["message"] for line in get_json(url, "/api/jobs/job-42/logs")["items"]
                ] == ["queued"]
        stats = get_json(url, "/api/stats")["database"]
        assert (stats["total_jobs"], stats["completed_jobs"], stats["failed_jobs"]) == (2, 1, 1)
        # the client's own reads of the same jobs
        assert {r.run_id: r.status for r in client.runs()} == {"job-42": "completed",
                                                               "job-43": "failed"}
        assert client.get_run("job-43").error.startswith("RuntimeError: exit status 2")

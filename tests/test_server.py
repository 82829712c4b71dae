"""``vidrestore serve``: a real server process on a loopback port, talked to over HTTP.

Small random-weight models (CenterFace, the small GFPGAN), so that every request does real work.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Weights
from media import probe
from PIL import Image
from serving import Server, png, start_server

from testkit.clips import FaceClip, astronaut, make_face_clip
from vidrestore.server.fetch import FetchRefused, _Answer, fetch_url, public_address

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def server(weights: Weights, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("serve"), weights, "--queue", "32", "--max-upload-mb", "4")
    yield s
    s.stop()


def _data_url(content: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(content).decode()


def _image(raw: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


FACE = astronaut()[::2, ::2].copy()  # 256x256


# -- images ------------------------------------------------------------------------------


def test_edit_with_a_data_url_and_an_upload_url_and_the_two_step_sequence(server: Server) -> None:
    status, health = server.json("GET", "/v1/health")
    assert status == 200 and health["device"] == "cpu" and health["queue_depth"] == 0
    status, out = server.json("POST", "/v1/edit", {"operation": "restore", "image_url": _data_url(png(FACE))})
    assert status == 200, out
    status, _, raw = server.call("GET", out["output_url"].removeprefix(server.url))
    restored = _image(raw)
    assert status == 200 and restored.shape == FACE.shape
    assert np.abs(restored.astype(int) - FACE).mean() > 1  # the face was restored (random weights: changed)
    # an upload, then its URL
    status, _, raw = server.upload("/v1/files", png(FACE), name="face.png")
    up = json.loads(raw)
    assert status == 200 and up["url"].endswith(f"/v1/files/{up['id']}")
    status, again = server.json("POST", "/v1/edit", {"operation": "restore", "image_url": up["url"]})
    assert status == 200, again
    # the seed's two steps: upscale 4x, then restore the upscaled picture
    status, big = server.json("POST", "/v1/edit", {"operation": "upscale", "image_url": up["url"], "scale": 4})
    assert status == 200, big
    status, final = server.json("POST", "/v1/edit", {"operation": "restore", "image_url": big["output_url"]})
    assert status == 200, final
    _, _, raw = server.call("GET", final["output_url"].removeprefix(server.url))
    assert _image(raw).shape == (1024, 1024, 3)


def test_restore_answers_with_the_image(server: Server) -> None:
    status, headers, raw = server.upload("/v1/restore", png(FACE), name="face.png", blend="0.5")
    assert status == 200 and headers["content-type"] == "image/png"
    half = _image(raw)
    _, _, raw = server.upload("/v1/restore", png(FACE), name="face.png", blend="1")
    full = _image(raw)
    # blend 0.5 lies between the original and the fully restored face
    assert 0 < np.abs(half.astype(int) - FACE).mean() < np.abs(full.astype(int) - FACE).mean()


def test_twenty_concurrent_images_each_get_their_own_answer(server: Server) -> None:
    images = [np.roll(FACE, 9 * k, axis=1)[: 160 + 4 * k] for k in range(20)]  # each its own size and content

    def one(k: int) -> tuple[int, np.ndarray]:
        status, _, raw = server.upload("/v1/restore", png(images[k]), name=f"{k}.png")
        assert status == 200, raw
        return k, _image(raw)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(one, range(20)))
    for k, out in answers:
        assert out.shape == images[k].shape  # nothing mixed up: each answer is its own picture
        others = [np.abs(out.astype(int) - i).mean() for i in images if i.shape == out.shape]
        assert len(others) == 1


# -- videos ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> FaceClip:
    return make_face_clip(tmp_path_factory.mktemp("serve-clips") / "call.mp4", frames=20)


def _job(server: Server, content: bytes, **fields: str) -> str:
    status, headers, raw = server.upload("/v1/jobs", content, name="call.mp4", **fields)
    assert status == 202, raw
    body = json.loads(raw)
    assert headers["location"] == f"/v1/jobs/{body['id']}" and body["state"] in ("queued", "running")
    return str(body["id"])


def test_a_video_job_through_to_its_result(server: Server, clip: FaceClip, tmp_path: Path) -> None:
    job = _job(server, clip.path.read_bytes(), blend="0.9")
    status, _, raw = server.call("GET", f"/v1/jobs/{job}/events")  # the stream ends when the job does
    events = [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")]
    assert status == 200 and events[-1]["state"] == "succeeded"
    assert [e["frames_done"] for e in events] == sorted(e["frames_done"] for e in events)
    done = server.wait(job)
    assert done["frames_done"] == done["frames_total"] == 20 and done["params"] == {"blend": 0.9}
    status, _, raw = server.call("GET", f"/v1/jobs/{job}/result")
    assert status == 200
    out = tmp_path / "restored.mp4"
    out.write_bytes(raw)
    p, src = probe(out), probe(clip.path)
    assert p.frames == src.frames and p.pts == src.pts and p.audio == src.audio  # as the CLI keeps them
    status, _, part = server.call("GET", f"/v1/jobs/{job}/result", headers={"Range": "bytes=10-109"})
    assert status == 206 and part == raw[10:110]
    status, _, _ = server.call("DELETE", f"/v1/jobs/{job}")
    assert status == 204
    assert server.json("GET", f"/v1/jobs/{job}")[0] == 404
    assert not [p for p in (server.data / "jobs").iterdir() if job in p.name]  # nothing it wrote is left


@pytest.mark.slow
def test_four_concurrent_jobs_and_a_cancel(server: Server, clip: FaceClip, tmp_path: Path) -> None:
    variants = []
    for k in range(4):
        path = tmp_path / f"v{k}.mp4"
        make_face_clip(path, frames=12 + 3 * k, seed=k)
        variants.append(path)
    jobs = [_job(server, v.read_bytes()) for v in variants]
    long = make_face_clip(tmp_path / "long.mp4", frames=80).path
    victim = _job(server, long.read_bytes())
    for job, src in zip(jobs, variants, strict=True):
        assert server.wait(job)["state"] == "succeeded"
        _, _, raw = server.call("GET", f"/v1/jobs/{job}/result")
        out = tmp_path / f"out-{job}.mp4"
        out.write_bytes(raw)
        assert probe(out).frames == probe(src).frames  # each job's own video, nothing mixed up
    server.wait(victim, ("running",))
    status, body = server.json("POST", f"/v1/jobs/{victim}/cancel")
    assert status == 200
    body = server.wait(victim)
    assert body["state"] == "canceled" and body["frames_done"] < 80
    assert server.call("GET", f"/v1/jobs/{victim}/result")[0] == 409
    assert not [p for p in (server.data / "jobs").iterdir() if victim in p.name and "-out" in p.name]


@pytest.mark.slow
def test_a_restart_mid_job_puts_it_back_in_the_queue(weights: Weights, tmp_path: Path) -> None:
    data = tmp_path / "serve"
    server = start_server(data, weights)
    clip = make_face_clip(tmp_path / "long.mp4", frames=60)
    job = _job(server, clip.path.read_bytes())
    server.wait(job, ("running",))
    server.stop(signal.SIGKILL)  # mid-job, no chance to tidy up
    again = start_server(data, weights, port=int(server.url.rsplit(":", 1)[1]))
    try:
        done = again.wait(job)
        assert done["state"] == "succeeded" and done["frames_done"] == 60
        _, _, raw = again.call("GET", f"/v1/jobs/{job}/result")
        out = tmp_path / "out.mp4"
        out.write_bytes(raw)
        assert probe(out).pts == probe(clip.path).pts
    finally:
        again.stop()


# -- limits and bad input ------------------------------------------------------------------


def _error(status_body: tuple[int, Any], status: int, kind: str) -> str:
    got, body = status_body
    assert got == status, body
    assert set(body) == {"error"} and body["error"]["kind"] == kind, body
    assert "Traceback" not in json.dumps(body)
    return str(body["error"]["message"])


def _as_json(answer: tuple[int, dict[str, str], bytes]) -> tuple[int, Any]:
    return answer[0], json.loads(answer[2])


def test_bad_input_gets_a_json_error_and_nothing_breaks(server: Server, clip: FaceClip) -> None:
    _error(_as_json(server.upload("/v1/restore", b"", name="empty.png")), 400, "input")
    _error(_as_json(server.upload("/v1/restore", b"not an image at all" * 50, name="a.png")), 400, "input")
    _error(server.json("POST", "/v1/edit", {"operation": "sharpen", "image_url": _data_url(png(FACE))}), 400, "config")
    _error(server.json("POST", "/v1/edit", {"operation": "restore"}), 400, "input")
    _error(_as_json(server.call("POST", "/v1/edit", b"{not json", {"Content-Type": "application/json"})), 400, "input")
    _error(_as_json(server.upload("/v1/restore", png(FACE), name="f.png", blend="7")), 400, "config")
    # a truncated video fails as the CLI says it (or is refused at once if nothing of it can be read)
    truncated = clip.path.read_bytes()[:3000]
    status, _, raw = server.upload("/v1/jobs", truncated, name="cut.mp4")
    if status == 202:
        failed = server.wait(json.loads(raw)["id"])
        assert failed["state"] == "failed" and failed["error"]["kind"] == "input"
    else:
        _error((status, json.loads(raw)), 400, "input")
    # a name is never a path: the file is stored by its content
    status, _, raw = server.upload("/v1/files", png(FACE), name="../../../../tmp/evil.png")
    fid = json.loads(raw)["id"]
    assert status == 200 and not Path("/tmp/evil.png").exists()
    assert [p.name for p in (server.data / "files").iterdir() if p.name.startswith(fid)] == [f"{fid}.png"]
    assert server.call("GET", "/v1/files/..%2F..%2Fjobs.sqlite3")[0] == 404
    assert server.json("GET", "/v1/jobs/nope")[0] == 404
    # fetching: off by default; inside addresses are refused whatever the list says
    for url in ("http://127.0.0.1:1/x.png", "http://10.0.0.1/x.png", "http://169.254.169.254/latest/"):
        _error(server.json("POST", "/v1/edit", {"operation": "restore", "image_url": url}), 400, "input")
    assert server.json("GET", "/v1/health")[1]["status"] in ("ready", "busy")


def test_an_oversized_upload_is_refused_before_it_is_read(server: Server) -> None:
    """413 as soon as the server knows: the body is sent slowly, in pieces, and the answer comes
    after the first 5 MB of a declared 64 MB (the limit is 4 MB), not at the end."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
        s.sendall(
            b"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(head):x}\r\n".encode() + head + b"\r\n"
        )
        chunk = os.urandom(1 << 20)
        answer = b""
        sent = 0
        s.settimeout(0.2)
        for _ in range(64):  # bounded: at most 64 MB
            try:
                s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += 1
                answer += s.recv(4096)
            except (TimeoutError, BlockingIOError):
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if answer:
                break
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent <= 8, sent
    # a declared length over the limit: refused before a byte of the body is sent
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {64 << 20}\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 413")


def test_token_and_binding_defaults(weights: Weights, tmp_path: Path) -> None:
    server = start_server(tmp_path / "serve", weights, token="s3cret")
    try:
        open_ = Server(server.url, server.data, server.args, server.proc)  # the same server, no token sent
        assert open_.json("GET", "/v1/health")[0] == 200  # health needs no token
        status, schema = open_.json("GET", "/openapi.json")
        assert status == 404 and "paths" not in (schema or {}), schema  # the API's schema is not handed out
        _error(open_.json("POST", "/v1/edit", {"operation": "restore", "image_url": "x"}), 401, "auth")
        _error(open_.json("GET", "/v1/jobs/x", Authorization="Bearer wrong"), 401, "auth")
        status, out = server.json("POST", "/v1/edit", {"operation": "restore", "image_url": _data_url(png(FACE))})
        assert status == 200, out
    finally:
        server.stop()
    r = subprocess.run(
        [sys.executable, "-m", "vidrestore", "serve", "--host", "0.0.0.0", "--data", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "VIDRESTORE_TOKEN"},
    )
    assert r.returncode == 2 and "--token" in r.stderr and "Traceback" not in r.stderr


# -- fetching other URLs (unit: no outside network here) ---------------------------------------


def test_fetching_refuses_inside_addresses_also_after_redirects_and_dns_tricks() -> None:
    for ip in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.0.1", "169.254.169.254", "::1", "fd00:ec2::254",
               "::ffff:127.0.0.1", "100.64.0.1", "0.0.0.0"):  # fmt: skip
        assert not public_address(ip), ip
    assert public_address("93.184.215.14")
    calls: list[str] = []

    def get(address: str, scheme: str, host: str, port: int, path: str, limit: int, timeout: float) -> _Answer:
        calls.append(f"{host}@{address}")
        if host == "img.example.org":
            return _Answer(302, "http://internal.example.org/secret", b"")
        return _Answer(200, None, b"image")

    def resolve(host: str, port: int) -> list[str]:
        return {"img.example.org": ["93.184.215.14"], "internal.example.org": ["10.0.0.5"],
                "both.example.org": ["93.184.215.14", "127.0.0.1"]}[host]  # fmt: skip

    allow = [".example.org"]
    with pytest.raises(FetchRefused, match="never fetches from"):  # the redirect leads inside
        fetch_url("http://img.example.org/a.png", allow, 100, resolve=resolve, get=get)
    assert calls == ["img.example.org@93.184.215.14"]
    with pytest.raises(FetchRefused, match="never fetches from"):  # one inside address among public ones
        fetch_url("http://both.example.org/a.png", allow, 100, resolve=resolve, get=get)
    with pytest.raises(FetchRefused, match="not on this server's list"):
        fetch_url("http://elsewhere.net/a.png", allow, 100, resolve=resolve, get=get)
    with pytest.raises(FetchRefused, match="off on this server"):
        fetch_url("http://img.example.org/a.png", [], 100, resolve=resolve, get=get)
    with pytest.raises(FetchRefused, match="never fetches from"):  # allowed by name, a loopback literal
        fetch_url("http://127.0.0.1/a.png", ["127.0.0.1"], 100, resolve=resolve, get=get)
    with pytest.raises(FetchRefused, match="only http"):
        fetch_url("file:///etc/passwd", allow, 100, resolve=resolve, get=get)
    for bad in ("http://127.0.0.1:99999/", "http://img.example.org:0x50/", "http://[::1/a.png"):
        with pytest.raises(FetchRefused, match="not a URL that can be fetched"):  # was a ValueError: a 500
            fetch_url(bad, ["127.0.0.1", ".example.org"], 100, resolve=resolve, get=get)


def test_the_readme_client_example_works_with_only_the_base_url_and_key_changed(server: Server, tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("```python\nimport base64\n")
    code = readme[start + len("```python\n") : readme.index("```", start + 10)]
    assert 'BASE_URL = "http://127.0.0.1:8000"' in code
    code = code.replace('"http://127.0.0.1:8000"', repr(server.url))
    Image.fromarray(FACE).save(tmp_path / "grandma.jpg", quality=90)
    (tmp_path / "client.py").write_text(code)
    r = subprocess.run([sys.executable, "client.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    restored = np.asarray(Image.open(tmp_path / "grandma.restored.jpg"))
    assert restored.shape == FACE.shape


@pytest.mark.slow
def test_a_full_queue_answers_429_and_results_expire(weights: Weights, clip: FaceClip, tmp_path: Path) -> None:
    server = start_server(tmp_path / "serve", weights, "--queue", "1", "--expire-hours", "0.002")  # 7.2 s
    try:
        answers = [server.upload("/v1/jobs", clip.path.read_bytes(), name="c.mp4") for _ in range(4)]
        refused = [a for a in answers if a[0] == 429]
        assert refused, [a[0] for a in answers]  # one runs, one waits, the rest are told to come back
        assert all(int(a[1]["retry-after"]) > 0 and json.loads(a[2])["error"]["kind"] == "busy" for a in refused)
        accepted = [json.loads(a[2])["id"] for a in answers if a[0] == 202]
        for job in accepted:
            assert server.wait(job)["state"] == "succeeded"
        fid = json.loads(server.upload("/v1/files", png(FACE), name="f.png")[2])["id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # bounded: until the expiry sweep has run
            gone = [server.json("GET", f"/v1/jobs/{j}")[0] for j in accepted] + [
                server.call("GET", f"/v1/files/{fid}")[0]
            ]
            if set(gone) == {404}:
                break
            time.sleep(0.5)
        assert set(gone) == {404}, gone
        left = [p.name for d in ("jobs", "files") for p in (server.data / d).iterdir()]
        assert left == [], left  # nothing a job or an upload wrote outlives its expiry
    finally:
        server.stop()

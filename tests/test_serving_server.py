"""The serving path for real: the Triton server of the nvidia-pytriton wheel on free loopback
ports, serving CPU repositories written by `ssi-deploy triton-repo --onnx` (python backend
running ONNX Runtime), queried with tritonclient over HTTP and gRPC.

- a backbone export (sparse_resnet50, 1x3x64x64, dynamic batch/height/width) and a detector
  export (faster_rcnn_sparse_resnet50, 1x3x96x128): every output equal, bit for bit, to ONNX
  Runtime run directly on the same inputs (batched requests too);
- a bounded load test: 300 requests at concurrency 4, p50/p90/p99 printed, zero errors, every
  answer correct although the dynamic batcher batched them, under a minute;
- the torch runtime (`--runtime torch`): answers equal to the PyTorch sparse path run here;
- kill -9 of the server in mid-load, then a restart on the same ports while the load goes on:
  every success answer correct, the failures counted and printed, no server, stub or
  /dev/shm region left (checked by PID and by name);
- `ssi-deploy serve` as a subprocess: ready, answers, and SIGTERM / Ctrl-C (SIGINT) end it
  with exit 0 and nothing left behind.

Every server and stub these tests start is ended by PID (TritonServer.stop). Skips, with the
reason, only where the nvidia-pytriton wheel cannot be installed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ssi_deploy.errors import SSIError
from ssi_deploy.serving import server as server_mod

try:
    server_mod.find_triton()
    import tritonclient.grpc  # noqa: F401
    import tritonclient.http  # noqa: F401
except (SSIError, ImportError) as e:
    pytest.skip(f"serving tests need the serve extra: {e}", allow_module_level=True)

from ssi_deploy.cli.main import main  # noqa: E402
from ssi_deploy.export import export_onnx  # noqa: E402
from ssi_deploy.models import create_model  # noqa: E402
from ssi_deploy.serving.client import Client, LoadResult, run_load  # noqa: E402
from ssi_deploy.serving.server import TritonServer, pid_alive, shm_regions, stub_pids  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _processes_mentioning(text: str) -> list[int]:
    """PIDs of live processes whose command line contains ``text`` (our repositories)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            if text in " ".join(server_mod._cmdline(int(d.name))) and pid_alive(int(d.name)):
                out.append(int(d.name))
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("serving")
    yield d
    # nothing any test of this module started may survive it
    left = _processes_mentioning(str(d))
    for pid in left:  # end them (by PID) before failing, so no stray process outlives the run
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"


def _repo(onnx_path: Path, out: Path, *extra) -> Path:
    rc = main(["triton-repo", "--onnx", str(onnx_path), "--output", str(out), "--runtime",
               "onnxruntime", *map(str, extra)])
    assert rc == 0
    return out / "models"


@pytest.fixture(scope="module")
def backbone(base):
    """(ONNX path, model repository folder, ORT session) of the backbone export."""
    path = export_onnx(create_model("sparse_resnet50", init_seed=0), base / "bb.onnx",
                       input_shape=(1, 3, 64, 64), dynamic=("batch", "height", "width"))
    models = _repo(path, base / "bb_repo", "--name", "bb", "--instances", "2", "--threads", "1",
                   "--max-batch-size", "4", "--max-queue-delay-us", "2000")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return path, models, ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def bb_server(backbone):
    server = TritonServer(backbone[1], exit_timeout_s=5).start(180)
    yield server
    server.stop()
    assert server.leftovers() == {"server": [], "stubs": [], "shm": []}


def reference(session, feeds) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def assert_equal(got: dict, want: dict, where=""):
    assert sorted(got) == sorted(want), where
    for n in want:
        assert got[n].dtype == want[n].dtype and got[n].shape == want[n].shape, (where, n)
        assert np.array_equal(got[n], want[n]), (where, n, float(np.abs(got[n] - want[n]).max()))


def _pool(n=6, shape=(1, 3, 64, 64), seed=0):
    rng = np.random.default_rng(seed)
    return [{"image": rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


# --------------------------------------------------------------------------------------------

def test_backbone_http_and_grpc_equal_onnxruntime(backbone, bb_server):
    _, _, sess = backbone
    assert bb_server.models == ["bb"] and len(bb_server.stubs()) == 2  # 2 instances
    rng = np.random.default_rng(7)
    cases = [rng.standard_normal(s).astype(np.float32)
             for s in [(1, 3, 64, 64), (2, 3, 64, 96), (3, 3, 96, 64)]]
    for proto, url in (("http", bb_server.http_url), ("grpc", bb_server.grpc_url)):
        c = Client(url, proto)
        try:
            for x in cases:
                assert_equal(c.infer("bb", {"image": x}), reference(sess, {"image": x}),
                             f"{proto} {x.shape}")
        finally:
            c.close()


def test_backbone_load_300_requests_concurrency_4(backbone, bb_server, capsys):
    _, _, sess = backbone
    pool = _pool()
    refs = [reference(sess, f) for f in pool]
    res = run_load(bb_server.http_url, "http", "bb", lambda i: pool[i % len(pool)], 300, 4,
                   keep_outputs=True)
    s = res.summary()
    with capsys.disabled():
        print(f"\nserving load (HTTP, 1x3x64x64, 2 instances x 1 thread): {s['requests']} "
              f"requests, concurrency 4, {s['seconds']:.1f} s, {s['throughput_per_s']:.1f}/s, "
              f"p50 {s['p50_ms']:.1f} ms, p90 {s['p90_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, "
              f"{s['errors']} errors")
    assert res.errors == [] and res.ok == 300
    assert res.seconds < 60
    for i, out in res.results:
        assert_equal(out, refs[i % len(pool)], f"request {i}")
    # the dynamic batcher did batch (equal shapes), and the batched answers were still exact
    c = Client(bb_server.http_url, "http")
    try:
        stats = c.client.get_inference_statistics("bb")["model_stats"][0]
    finally:
        c.close()
    assert stats["inference_count"] > stats["execution_count"], stats


def test_detector_http_and_grpc_equal_onnxruntime(base):
    model = create_model("faster_rcnn_sparse_resnet50", init_seed=0)
    path = export_onnx(model, base / "det.onnx", input_shape=(1, 3, 96, 128),
                       dynamic=("batch", "height", "width"))
    del model
    models = _repo(path, base / "det_repo", "--name", "det", "--threads", "2")
    cfg = (models / "det" / "config.pbtxt").read_text()
    assert "TYPE_INT64" in cfg and 'name: "image_info"' in cfg
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    with TritonServer(models, exit_timeout_s=5) as server:
        for proto, url, (h, w) in (("http", server.http_url, (96, 128)),
                                   ("grpc", server.grpc_url, (128, 96))):
            feeds = {"image": rng.standard_normal((1, 3, h, w)).astype(np.float32),
                     "image_info": np.array([[h, w, 1.0]], np.float32)}
            c = Client(url, proto)
            try:
                got = c.infer("det", feeds)
            finally:
                c.close()
            want = reference(sess, feeds)
            assert got["labels"].dtype == np.int64 and want["num_detections"].shape == (1,)
            # a [batch] output is dims [1] + reshape [] in config.pbtxt: clients get [batch, 1]
            assert got["num_detections"].shape == (1, 1)
            got["num_detections"] = got["num_detections"].reshape(1)
            assert_equal(got, want, proto)
    assert server.leftovers() == {"server": [], "stubs": [], "shm": []}


def test_torch_runtime_serves_the_pytorch_sparse_path(backbone, base):
    """--runtime torch: model.py rebuilds the model from the manifest (seeded random weights)
    and runs the project's PyTorch sparse path; its answers equal that path run here."""
    from ssi_deploy.backends.torch_backend import TorchBackend

    path = backbone[0]
    models = _repo(path, base / "torch_repo", "--name", "bbt", "--runtime", "torch",
                   "--threads", "1", "--max-batch-size", "2")
    assert 'string_value: "torch"' in (models / "bbt" / "config.pbtxt").read_text()
    x = _pool(1, seed=9)[0]
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        want = TorchBackend.from_onnx(path).run(x)
    finally:
        torch.set_num_threads(before)
    with TritonServer(models, exit_timeout_s=5) as server:
        c = Client(server.grpc_url, "grpc")
        try:
            got = c.infer("bbt", x)
        finally:
            c.close()
    assert server.leftovers() == {"server": [], "stubs": [], "shm": []}
    assert sorted(got) == sorted(want)
    for n in want:
        assert got[n].shape == want[n].shape and got[n].dtype == want[n].dtype, n
        assert np.array_equal(got[n], want[n]), (n, float(np.abs(got[n] - want[n]).max()))


def test_kill_9_in_mid_load_then_restart(backbone, capsys):
    _, models, sess = backbone
    pool = _pool(4, seed=11)
    refs = [reference(sess, f) for f in pool]
    first = TritonServer(models, exit_timeout_s=5).start(180)
    second = None
    try:
        res = LoadResult()
        load = threading.Thread(target=run_load, kwargs=dict(
            url=first.http_url, protocol="http", model="bb",
            feeds_for=lambda i: pool[i % len(pool)], n_requests=180, concurrency=4,
            keep_outputs=True, timeout_s=20, backoff_s=0.3, into=res))
        load.start()
        deadline = time.monotonic() + 60
        while res.ok < 30 and time.monotonic() < deadline and load.is_alive():
            time.sleep(0.02)
        assert res.ok >= 30, res.errors[:3]
        stubs = first.stubs()
        assert len(stubs) == 2
        first.kill()  # SIGKILL, mid-load: in-flight requests fail
        killed_at = res.ok + len(res.errors)
        assert not pid_alive(first.pid)
        second = TritonServer(models, http_port=first.ports["http"],
                              grpc_port=first.ports["grpc"],
                              metrics_port=first.ports["metrics"], exit_timeout_s=5).start(180)
        load.join(timeout=120)
        assert not load.is_alive()
        ok_after = sum(1 for i, out in res.results if out is not None)
        with capsys.disabled():
            print(f"\nkill -9 at request ~{killed_at}: {res.ok} answers, all checked, "
                  f"{len(res.errors)} failures (e.g. {res.errors[0] if res.errors else '-'}), "
                  f"stubs of the killed server {stubs}")
        assert res.ok + len(res.errors) == 180
        assert res.errors, "the kill happened in mid-load: some requests must have failed"
        for i, out in res.results:  # every success answer carried a correct result
            if out is not None:
                assert_equal(out, refs[i % len(pool)], f"request {i}")
        assert ok_after == res.ok
        # the restarted server answered requests of this same load after the crash
        assert res.ok > 30 and any(out is not None for _, out in res.results[killed_at + 4:])
        first.stop()  # the killed server's stubs (deadlocked or not) and shm, by PID and name
        assert first.leftovers() == {"server": [], "stubs": [], "shm": []}
        assert not [p for p in stubs if pid_alive(p)]
        assert stub_pids(first.prefix) == [] and shm_regions(first.prefix) == []
        assert len(second.stubs()) == 2
    finally:
        first.stop()
        if second is not None:
            second.stop()
            assert second.leftovers() == {"server": [], "stubs": [], "shm": []}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_cli_stops_cleanly(backbone, sig):
    repo = backbone[1].parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen([sys.executable, "-m", "ssi_deploy.cli.main", "serve", str(repo),
                             "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    server_pid = None
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "server pid" in line:
                break
        text = "".join(lines)
        assert "server pid" in text, text
        http = re.search(r"HTTP\s+http://(\S+)", text).group(1)
        grpc = re.search(r"gRPC\s+(\S+)", text).group(1)
        server_pid = int(re.search(r"server pid (\d+)", text).group(1))
        assert re.search(r"metrics\s+http://127\.0\.0\.1:\d+/metrics", text)
        x = _pool(1, seed=5)[0]
        want = reference(backbone[2], x)
        for proto, url in (("http", http), ("grpc", grpc)):
            c = Client(url, proto)
            try:
                assert_equal(c.infer("bb", x), want, proto)
            finally:
                c.close()
        prefix = f"ssi{proc.pid}x"  # the shared-memory prefix of the serve process's server
        stubs = stub_pids(prefix)
        assert len(stubs) == 2  # the model's two instances
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=60)
        text += rest
        assert proc.returncode == 0, text
        assert "stopped: no process or shared memory left" in text
        assert not pid_alive(server_pid) and not [p for p in stubs if pid_alive(p)]
        assert stub_pids(prefix) == [] and shm_regions(prefix) == []
    finally:
        if proc.poll() is None:  # a failed check: end serve, then whatever it left, by PID
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        prefix = f"ssi{proc.pid}x"
        pids = stub_pids(prefix) + ([server_pid] if server_pid and pid_alive(server_pid) else [])
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for region in shm_regions(prefix):
            region.unlink()

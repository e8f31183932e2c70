"""The Triton Inference Server of the ``nvidia-pytriton`` wheel, started on 127.0.0.1 and
stopped by PID, python-backend stubs and their shared memory included.

What the wheel holds (``pytriton/tritonserver``): ``bin/tritonserver`` (Triton 2.51), the python
backend (``backends/python``), one python-backend stub per Python version
(``python_backend_stubs/3.X/triton_python_backend_stub``) and, beside the package,
``nvidia_pytriton.libs`` with the libraries they link. No onnxruntime or TensorRT backend: CPU
repositories here run ONNX Runtime inside the python backend.

How it is started (what pytriton does, without pytriton's Python layer):

- a private backends folder per server, with the python backend and the stub of *this*
  interpreter's version;
- ``LD_LIBRARY_PATH``: this interpreter's libpython folder first (the stub links
  ``libpython3.X.so.1.0``; another one, the system's, fails the model start), then
  ``nvidia_pytriton.libs``;
- ``PATH``: this interpreter's folder first: the embedded interpreter of the stub finds its
  prefix, and so the virtual environment's site-packages, from the ``python3`` on the PATH;
- a unique shared-memory prefix (``--backend-config=python,shm-region-prefix-name=``): every
  stub of this server carries it on its command line and every region in /dev/shm starts with
  it, so they are found, and ended, by PID and name even after the server was killed (a stub
  whose server got SIGKILL can stay, deadlocked, holding its region).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import SSIError

SERVE_HINT = "pip install -e '.[serve]' (nvidia-pytriton: Linux x86_64, glibc >= 2.35)"
STUB_NAME = "triton_python_backend_stub"
SHM_DIR = Path("/dev/shm")


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    python_backend: Path  # folder with libtriton_python.so, triton_python_backend_utils.py
    stub: Path  # the stub for this interpreter's Python version
    libs: Path  # nvidia_pytriton.libs
    version: str  # nvidia-pytriton's


def glibc_version() -> tuple[int, int] | None:
    import platform

    lib, ver = platform.libc_ver()
    if lib != "glibc" or not ver:
        return None
    try:
        major, minor = ver.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def find_triton() -> TritonInstall:
    """The bundled server, or SSIError with what to install."""
    if not sys.platform.startswith("linux"):
        raise SSIError(f"the bundled Triton server runs on Linux only (this is {sys.platform}); "
                       "use NVIDIA's tritonserver container")
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    # only the wheel's folder is used (pytriton's own Python layer is not imported)
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        g = glibc_version()
        why = f" (this machine has glibc {g[0]}.{g[1]})" if g else ""
        raise SSIError(f"the Triton server is not installed{why}: {SERVE_HINT}")
    try:
        ver = version("nvidia-pytriton")
    except PackageNotFoundError:
        ver = "?"
    root = Path(list(spec.submodule_search_locations)[0]).resolve() / "tritonserver"
    py = f"{sys.version_info[0]}.{sys.version_info[1]}"
    inst = TritonInstall(root / "bin" / "tritonserver", root / "backends" / "python",
                         root / "python_backend_stubs" / py / STUB_NAME,
                         root.parent.parent / "nvidia_pytriton.libs", ver)
    for what, p in (("server binary", inst.binary), ("python backend", inst.python_backend),
                    (f"python backend stub for Python {py}", inst.stub)):
        if not p.exists():
            raise SSIError(f"nvidia-pytriton {ver} has no {what} ({p}): reinstall it "
                           f"({SERVE_HINT}), or use a Python it ships a stub for")
    return inst


def libpython_dir() -> Path | None:
    """The folder of this interpreter's shared libpython (None for a static build)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    name = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
    if libdir and name and (Path(libdir) / name).exists():
        return Path(libdir)
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as servers bind: connections in TIME_WAIT (a server just killed) do not count
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def stub_pids(prefix: str) -> list[int]:
    """PIDs of the python-backend stubs whose shared-memory region starts with ``prefix``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        argv = _cmdline(int(d.name))
        if len(argv) > 2 and argv[0].endswith(STUB_NAME) and argv[2].startswith(prefix):
            out.append(int(d.name))
    return sorted(out)


def shm_regions(prefix: str) -> list[Path]:
    if not SHM_DIR.is_dir():
        return []
    return sorted(p for p in SHM_DIR.iterdir() if p.name.startswith(prefix))


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _end(pids: list[int], grace_s: float) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``, each PID; waits until they are gone."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        alive = [p for p in pids if pid_alive(p)]
        for p in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, sig)
        deadline = time.monotonic() + wait_s
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = [p for p in alive if pid_alive(p)]
        if not alive:
            return


class TritonServer:
    """One tritonserver process on 127.0.0.1 for ``model_repository``.

    ``start()`` returns once the server and every model are ready (or raises SSIError with the
    server log's last lines); ``stop()`` ends it with SIGTERM (SIGKILL after ``grace_s``), then
    every stub of its shared-memory prefix by PID, removes their /dev/shm regions and its
    working folder. ``kill()`` sends SIGKILL to the server alone (what a crash looks like).
    Ports: 0 or None picks free ones."""

    def __init__(self, model_repository: str | os.PathLike, http_port: int | None = None,
                 grpc_port: int | None = None, metrics_port: int | None = None,
                 host: str = "127.0.0.1", exit_timeout_s: int = 10, log_verbose: int = 0):
        self.repo = Path(model_repository).resolve()
        if not self.repo.is_dir():
            raise SSIError(f"model repository {self.repo} does not exist")
        self.install = find_triton()
        self.host = host
        self.asked = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.ports: dict[str, int] = {}
        self.exit_timeout_s = int(exit_timeout_s)
        self.log_verbose = int(log_verbose)
        self.prefix = f"ssi{os.getpid()}x{secrets.token_hex(4)}"
        self.workdir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.seen_stubs: set[int] = set()
        self.models: list[str] = []

    # -- where -----------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports['grpc']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.ports['metrics']}/metrics"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def log_path(self) -> Path | None:
        return self.workdir / "tritonserver.log" if self.workdir else None

    def log_tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except (OSError, AttributeError):
            return ""
        keep = [ln for ln in lines if ln[:1] in "EW" or "error" in ln.lower()] or lines
        return "\n".join(keep[-n:])

    # -- life --------------------------------------------------------------------------------
    def _prepare(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="ssi-triton-"))
        dest = self.workdir / "backends" / "python"
        dest.mkdir(parents=True)
        for f in self.install.python_backend.iterdir():
            if f.is_file():
                shutil.copy2(f, dest / f.name)
        shutil.copy2(self.install.stub, dest / STUB_NAME)

    def _env(self) -> dict:
        env = dict(os.environ)
        libs = [str(p) for p in (libpython_dir(), self.install.libs) if p is not None]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def _argv(self) -> list[str]:
        p = self.ports
        return [str(self.install.binary), f"--model-repository={self.repo}",
                f"--backend-directory={self.workdir / 'backends'}",
                f"--http-address={self.host}", f"--http-port={p['http']}",
                f"--grpc-address={self.host}", f"--grpc-port={p['grpc']}",
                f"--metrics-address={self.host}", f"--metrics-port={p['metrics']}",
                "--allow-gpu-metrics=false", "--strict-readiness=true",
                f"--exit-timeout-secs={self.exit_timeout_s}",
                f"--backend-config=python,shm-region-prefix-name={self.prefix}",
                f"--log-verbose={self.log_verbose}"]

    def _pick_ports(self) -> None:
        used: set[int] = set()
        for k, v in self.asked.items():
            if v:
                if port_in_use(int(v), self.host):
                    raise SSIError(f"port {v} ({k}) on {self.host} is in use: choose another "
                                   f"with --{k}-port, or 0 for a free one")
                self.ports[k] = int(v)
            else:
                port = free_port(self.host)
                while port in used:
                    port = free_port(self.host)
                self.ports[k] = port
            used.add(self.ports[k])

    def start(self, timeout_s: float = 120.0) -> "TritonServer":
        if self.proc is not None:
            raise SSIError("this server was already started")
        self._prepare()
        attempts = 1 if all(self.asked.values()) else 3  # free ports can be taken meanwhile
        try:
            for attempt in range(attempts):
                self._pick_ports()
                log = open(self.log_path, "ab")
                try:
                    self.proc = subprocess.Popen(self._argv(), stdout=log, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, env=self._env(),
                                                 cwd=self.workdir, start_new_session=True)
                finally:
                    log.close()
                try:
                    self.wait_ready(timeout_s)
                    return self
                except SSIError:
                    tail = self.log_tail(40)
                    self._stop_processes()
                    self.proc = None
                    if attempt + 1 < attempts and "address already in use" in tail.lower():
                        continue
                    raise
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://{self.http_url}"
        while True:
            self._note_stubs()
            if self.proc.poll() is not None:
                raise SSIError(f"tritonserver exited with code {self.proc.returncode} before it "
                               f"was ready:\n{self.log_tail()}")
            if _http_status(url + "/v2/health/ready") == 200:
                break
            if time.monotonic() > deadline:
                raise SSIError(f"tritonserver was not ready after {timeout_s:.0f} s:\n"
                               f"{self.log_tail()}")
            time.sleep(0.2)
        index = _http_json(url + "/v2/repository/index", method="POST") or []
        self.models = sorted(m["name"] for m in index if m.get("state") == "READY")
        not_ready = [m for m in index if m.get("state") != "READY"]
        if not_ready:
            raise SSIError("models not ready: " + ", ".join(
                f"{m['name']} ({m.get('reason') or m.get('state')})" for m in not_ready))
        self._note_stubs()

    def _note_stubs(self) -> None:
        self.seen_stubs.update(stub_pids(self.prefix))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the server alone (its stubs stay, as after a crash)."""
        self._note_stubs()
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stubs(self) -> list[int]:
        self._note_stubs()
        return sorted(p for p in self.seen_stubs if pid_alive(p))

    def _stop_processes(self, grace_s: float | None = None) -> None:
        grace = self.exit_timeout_s + 5.0 if grace_s is None else grace_s
        self._note_stubs()
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self._note_stubs()
        # the stubs leave by themselves when their server exits cleanly; after a crash they
        # may not (deadlocked on the shared-memory mutex): end them by PID
        _end(sorted(set(self.seen_stubs) | set(stub_pids(self.prefix))), grace_s=2.0)
        for region in shm_regions(self.prefix):
            with contextlib.suppress(OSError):
                region.unlink()

    def stop(self, grace_s: float | None = None) -> None:
        self._stop_processes(grace_s)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def leftovers(self) -> dict:
        """What of this server still exists: {'server': [pid], 'stubs': [pids], 'shm': [paths]}."""
        return {"server": [self.proc.pid] if self.proc is not None and pid_alive(self.proc.pid) else [],
                "stubs": [p for p in sorted(set(self.seen_stubs) | set(stub_pids(self.prefix)))
                          if pid_alive(p)],
                "shm": [str(p) for p in shm_regions(self.prefix)]}

    def __enter__(self) -> "TritonServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


def _http_json(url: str, method: str = "GET"):
    req = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read() or b"null")
    except (urllib.error.URLError, OSError, ValueError):
        return None

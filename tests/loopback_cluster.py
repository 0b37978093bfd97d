"""A Ray cluster and an MLflow server of real processes on this machine's loopback, started
with the commands of docs/tune.md's runbook ("Several machines").

Everything runs in a private network namespace, which holds nothing but a loopback device:

* Ray 2.60 binds a node's ports to 127.0.0.1 only when the node's IP is 127.0.0.1, and
  `ray start --address` turns 127.0.0.1 into the machine's outward address unless that
  address does not exist. Inside the namespace it does not, so the head, the joining node,
  their workers and the drivers all resolve to 127.0.0.1 and bind nothing else (measured
  outside a namespace: every Ray port of a joining node listens on all interfaces).
* Nothing started here can be reached from outside the machine, whatever it binds.
* Every process of the cluster is a member of the namespace, so teardown ends exactly
  those, and the namespace's holder ends them itself if the test process dies.

The namespace is made with ``unshare --user --map-root-user --net`` (util-linux): root can
always do that, other users where unprivileged user namespaces are allowed.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLONE_NEWNET = 0x40000000

# The namespace's first process: brings the loopback device up, then waits. If the process
# that made it dies (a test run killed outright), it ends every process of its namespace and
# removes the folders named in its arguments.
_HOLDER = """
import fcntl, os, shutil, signal, socket, struct, sys, time
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    flags = struct.unpack("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sh", b"lo", 0)))[1]
    fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))
parent, mine = os.getppid(), os.readlink("/proc/self/ns/net")
print("ready", flush=True)
while os.getppid() == parent:
    time.sleep(0.5)
for pid in os.listdir("/proc"):
    try:
        if pid.isdigit() and int(pid) != os.getpid() and os.readlink(f"/proc/{pid}/ns/net") == mine:
            os.kill(int(pid), signal.SIGKILL)
    except OSError:
        pass
for folder in sys.argv[1:]:
    shutil.rmtree(folder, ignore_errors=True)
"""


class NamespaceUnavailable(RuntimeError):
    """No private network namespace can be made here."""


class Namespace:
    """A private network namespace with only a loopback device, and its holder process."""

    def __init__(self, cleanup: Sequence[Path] = ()) -> None:
        unshare = ["unshare", "--user", "--map-root-user", "--net"]
        try:
            self.holder = subprocess.Popen(
                [*unshare, sys.executable, "-c", _HOLDER, *map(str, cleanup)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # a Ctrl-C of the test run is for the test to handle
            )
        except FileNotFoundError:
            raise NamespaceUnavailable("unshare (util-linux) is not installed") from None
        line = self.holder.stdout.readline() if self.holder.stdout else ""
        if line.strip() != "ready":
            self.holder.kill()
            error = self.holder.stderr.read() if self.holder.stderr else ""
            raise NamespaceUnavailable(f"unshare failed: {error.strip()[:300]}")
        self.path = f"/proc/{self.holder.pid}/ns/net"
        self.inode = os.readlink(self.path)

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace (nsenter execs it: the pid is the command's)."""
        target = f"--target={self.holder.pid}"
        return ["nsenter", target, "--user", "--net", "--preserve-credentials", "--", *argv]

    def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """``func(*args)`` in a thread that joined the namespace: its sockets live there."""
        out: dict[str, Any] = {}

        def run() -> None:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns into the test's network namespace")
                out["value"] = func(*args)
            except BaseException as err:  # handed to the calling thread
                out["error"] = err
            finally:
                os.close(fd)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join()
        if "error" in out:
            raise out["error"]
        return out["value"]

    def members(self) -> list[int]:
        """Every process in the namespace but the holder."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != self.holder.pid:
                with contextlib.suppress(OSError):
                    if os.readlink(entry / "ns" / "net") == self.inode:
                        found.append(int(entry.name))
        return found

    def listening(self) -> list[tuple[str, int]]:
        """(address, port) of every listening TCP socket in the namespace."""
        sockets = []
        for table in ("tcp", "tcp6"):
            for line in Path(f"/proc/{self.holder.pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    address, port = fields[1].split(":")
                    sockets.append((_address(address), int(port, 16)))
        return sockets

    def close(self) -> None:
        for pid in self.members():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.holder.kill()
        self.holder.wait(timeout=30)


def _address(hex_address: str) -> str:
    """/proc/net/tcp's hex address as text (IPv4, or IPv6 as 32 hex digits)."""
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return ".".join(str(b) for b in reversed(raw))
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]  # each 32-bit word is host-order
    ipv6 = b"".join(words)
    if ipv6[:12] == b"\0" * 10 + b"\xff\xff":
        return "::ffff:" + ".".join(str(b) for b in ipv6[12:])
    return ":".join(ipv6[i : i + 2].hex() for i in range(0, 16, 2))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_token(path: Path) -> Path:
    """A fresh Ray auth token, readable by its owner only (mode 600 from the start)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Node:
    """One `ray start --block` process: a Ray node whose processes all descend from it."""

    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.proc, self.log = proc, log
        self.node_id = ""

    def wait_started(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in self.log.read_text():
            assert self.proc.poll() is None, f"ray start exited:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"ray start hung:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.3)
        for pid in descendants(self.proc.pid):
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
                if argv[0].endswith("/raylet"):
                    self.node_id = next(
                        a.split("=", 1)[1] for a in argv if a.startswith("--node_id=")
                    )
        assert self.node_id, "no raylet below ray start"

    def kill(self) -> int:
        """SIGKILL the node: ray start, its raylet and the raylet's workers. Returns how many."""
        processes = [self.proc.pid, *descendants(self.proc.pid)]
        for pid in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        return len(processes)


class LoopbackCluster:
    """Head, joining nodes, MLflow server and drivers, as the runbook starts them."""

    head: Node
    worker: Node  # the joining node of the moment
    mlflow: subprocess.Popen
    mlflow_log: Path

    def __init__(self, root: Path) -> None:
        self.root = root
        # Ray's unix sockets live under --temp-dir, whose path must stay short.
        self.ray_temp = Path(tempfile.mkdtemp(prefix="mt-ray-", dir="/tmp"))
        try:
            self.ns = Namespace(cleanup=[self.ray_temp])
        except NamespaceUnavailable:
            shutil.rmtree(self.ray_temp)
            raise
        self.token = write_token(root / "ray_auth_token")
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(self.token),
            PYTHONPATH=str(REPO),
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        )
        self.ray_port = self.ns.call(free_port)
        self.mlflow_port = self.ns.call(free_port)
        self.address = f"127.0.0.1:{self.ray_port}"
        self.mlflow_url = f"http://127.0.0.1:{self.mlflow_port}"
        self._logs = 0

    def start(
        self,
        argv: Sequence[str],
        name: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> tuple[subprocess.Popen, Path]:
        """``argv`` in the namespace, in its own session, its output in a numbered log."""
        self._logs += 1
        log = self.root / f"{self._logs:02d}-{name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                self.ns.command(argv),
                env=dict(env or self.env),
                cwd=cwd or self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return proc, log

    # -- the runbook's steps

    def start_mlflow(self) -> None:
        self.mlflow, self.mlflow_log = self.start(
            [
                str(BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.mlflow_port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.root / "mlartifacts"),
            ],
            "mlflow",
        )

    def start_head(self, num_cpus: int = 1) -> Node:
        proc, log = self.start(
            [
                str(BIN / "ray"),
                "start",
                "--head",
                "--node-ip-address",
                "127.0.0.1",
                "--port",
                str(self.ray_port),
                *self._node_arguments(num_cpus),
                "--include-dashboard",
                "false",
                "--temp-dir",
                str(self.ray_temp),
            ],
            "ray-head",
        )
        return Node(proc, log)

    def start_worker(self, num_cpus: int = 1, env: Mapping[str, str] | None = None) -> Node:
        """`ray start --address`: a second raylet of this machine with its own CPUs."""
        proc, log = self.start(
            [str(BIN / "ray"), "start", "--address", self.address, *self._node_arguments(num_cpus)],
            "ray-worker",
            env=env,
        )
        return Node(proc, log)

    @staticmethod
    def _node_arguments(num_cpus: int) -> list[str]:
        # --block keeps each node's processes below one process the test owns
        return ["--num-cpus", str(num_cpus), "--num-gpus", "0", "--disable-usage-stats", "--block"]

    def wait_mlflow(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.mlflow.poll() is None, self.mlflow_log.read_text()[-3000:]
            with contextlib.suppress(OSError):
                if self.ns.call(_get_status, f"{self.mlflow_url}/health") == 200:
                    return
            assert time.monotonic() < deadline, "the MLflow server did not answer /health"
            time.sleep(0.5)

    def driver(
        self, argv: Sequence[str], name: str, env: Mapping[str, str] | None = None
    ) -> tuple[subprocess.Popen, Path]:
        """A driver command (python -m ...), run from its own working directory."""
        cwd = self.root / "driver"
        cwd.mkdir(exist_ok=True)
        return self.start([sys.executable, *argv], name, env=env, cwd=cwd)

    def rest(self, endpoint: str, payload: dict | None = None, **query: Any) -> dict:
        """One call of MLflow's REST API (``/api/2.0/mlflow/<endpoint>``)."""
        return self.ns.call(_rest, self.mlflow_url, endpoint, payload, query)

    def close(self) -> None:
        self.ns.close()
        shutil.rmtree(self.ray_temp, ignore_errors=True)


def _get_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status


def _rest(url: str, endpoint: str, payload: dict | None, query: dict) -> dict:
    address = f"{url}/api/2.0/mlflow/{endpoint}"
    if query:
        address += "?" + urllib.parse.urlencode(query)
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(
        address, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())

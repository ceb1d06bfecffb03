"""`v2x serve NAME --processes N`: one service as N processes sharing its port.

A grpc.aio server runs its handlers on one event loop, so one process uses one core. gRPC listens with
SO_REUSEPORT, so N processes bound to the same port share its connections (the kernel spreads new
connections over them). Each process is a whole service (its own pools, caches, indexes and background
tasks): replicas on one host, as they would be on several. The supervisor forwards SIGTERM / SIGINT to its
processes and waits for them; when one exits on its own, it stops the others and exits with that one's code,
so that whatever runs the supervisor sees the failure rather than a service running on fewer cores.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from types import FrameType

# How long a stopping process may take beyond the server's grace period before it is killed.
STOP_MARGIN_S = 10.0
POLL_S = 0.2
# A process writes a byte to the descriptor named here once it serves (`runtime.serve`).
READY_FD_ENV = "V2X_READY_FD"
READY_LINE = "processes serving on port"


# A service's processes take metrics ports this far apart (the service's, +100, +200, ...), so that the replicas of
# all the services on one host (`v2x run --replicas N`) never take each other's.
METRICS_STRIDE = 100


def worker_env(env: Mapping[str, str], name: str, index: int, metrics_port: int) -> dict[str, str]:
    """The environment of process `index`: one process each, and its own metrics port (the service's port +
    index * METRICS_STRIDE) when the service has one, since every process keeps its own counters."""
    out = dict(env)
    if metrics_port:
        out[f"V2X_{name.upper()}_METRICS_PORT"] = str(metrics_port + index * METRICS_STRIDE)
    return out


def supervise(name: str, processes: int, port: int, metrics_port: int, grace_s: float) -> int:
    """Runs `processes` copies of `v2x serve NAME` until a stop signal or until one of them exits; returns the exit
    code for the supervisor."""
    if port == 0:
        raise SystemExit(f"--processes {processes} needs a fixed port for {name} (V2X_{name.upper()}_PORT): "
                         "processes share a port, and port 0 would give each its own")
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    children: list[subprocess.Popen[bytes]] = []
    waiting: dict[int, int] = {}  # read end of a ready pipe -> its process' index
    try:
        for i in range(processes):
            read_fd, write_fd = os.pipe()
            env = worker_env(os.environ, name, i, metrics_port)
            env[READY_FD_ENV] = str(write_fd)
            children.append(subprocess.Popen([sys.executable, "-m", "services.cli", "serve", name], env=env,
                                             pass_fds=(write_fd,)))
            os.close(write_fd)
            waiting[read_fd] = i
        code = 0
        while not stopping:
            if waiting:
                # Whoever starts the supervisor learns from this line that every process serves (a health check
                # on the shared port reaches only one of them).
                for fd in select.select(list(waiting), [], [], POLL_S)[0]:
                    if os.read(fd, 1):
                        del waiting[fd]
                        os.close(fd)
                        if not waiting:
                            print(f"v2x serve {name}: {processes} {READY_LINE} {port}", file=sys.stderr, flush=True)
                    else:  # the process exited before it served: the check below sees it
                        del waiting[fd]
                        os.close(fd)
            exited = [c for c in children if c.poll() is not None]
            if exited:
                code = exited[0].returncode or 1
                print(f"v2x serve {name}: process {exited[0].pid} exited with {exited[0].returncode}; "
                      "stopping the others", file=sys.stderr)
                break
            if not waiting:
                time.sleep(POLL_S)
        return code
    finally:
        for fd in waiting:
            os.close(fd)
        stop_processes(children, grace_s + STOP_MARGIN_S)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_processes(procs: Sequence[subprocess.Popen[bytes]], within_s: float) -> None:
    """SIGTERM to every process still running, then waits for them all; whichever is not gone within `within_s`
    (counted from the first signal) is killed."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + within_s
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

"""Run a command so that nothing it starts outlives it, or outlives us.

``run_guarded(["airflow", "standalone"], env)`` starts a small guardian process in a session
of its own, and the guardian starts the command in its process group. The guardian stops the
whole tree (the group, plus descendants that made groups of their own, such as Airflow's task
processes): SIGTERM, a grace period, then SIGKILL, when

- this process gets Ctrl-C, SIGTERM or SIGHUP (it forwards SIGTERM to the guardian);
- this process dies, even by SIGKILL (Linux: PR_SET_PDEATHSIG; elsewhere it polls the parent):
  then at once with SIGKILL, no grace (whoever killed us wants it stopped, and a task given a
  grace would go on committing), and then ``on_orphaned`` runs, to record what was stopped;
- the command exits by itself (stragglers are reaped).

Run as ``python -m tasks.process_guard PARENT_PID GRACE -- COMMAND...`` by ``run_guarded``.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

ON_ORPHANED = "TEXTCLF_GUARD_ON_ORPHANED"  # JSON list: the command to run when the parent died
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_guarded(
    command: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    cwd: str | Path | None = None,
    stdout: IO | int | None = None,
    grace_seconds: float = 20.0,
    on_start=None,
    on_orphaned: Sequence[str] | None = None,
    stopped: list[int] | None = None,
) -> int:
    """Run ``command`` under a guardian; returns its exit status (128 + signal when stopped).

    ``on_start(process)`` is called once the guardian runs (e.g. to wait for a port); it runs
    in this process while the signals above are handled. ``on_orphaned``: a command the guardian
    runs (same environment, 60 s at most) after it stopped the tree because this process died.
    ``stopped`` receives the signal when this process was asked to stop, so a caller can tell
    that from the command's own death.
    """
    guardian_env = dict(env if env is not None else os.environ)
    if on_orphaned:
        guardian_env[ON_ORPHANED] = json.dumps(list(on_orphaned))
    guardian = subprocess.Popen(
        [sys.executable, "-m", "tasks.process_guard", str(os.getpid()), str(grace_seconds), "--",
         *command],
        env=guardian_env, cwd=cwd, stdout=stdout,
        stderr=subprocess.STDOUT if stdout is not None else None, stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in a terminal reaches us only; we decide what follows
    )
    stop_requested: list[int] = []

    def forward(signum, frame):
        stop_requested.append(signum)
        if stopped is not None:
            stopped.append(signum)
        try:
            guardian.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in _STOP_SIGNALS}
    try:
        if on_start is not None and not stop_requested:
            on_start(guardian)
        while True:
            try:
                code = guardian.wait()
                break
            except KeyboardInterrupt:  # a handler raised it; keep waiting for the cleanup
                forward(signal.SIGINT, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 + stop_requested[0] if stop_requested else code


def _descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(proc) -> bool:
    import psutil

    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_tree(root_pid: int, group: int, grace_seconds: float) -> None:
    """SIGTERM the group and every descendant of ``root_pid``, SIGKILL what is left after the
    grace period. The caller is the group's leader and a child subreaper, so orphans of the
    tree stay its descendants; it must ignore SIGTERM itself."""
    import psutil

    known = {p.pid: p for p in _descendants(root_pid)}
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        pass
    for proc in list(known.values()):
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        for child in _descendants(root_pid):  # children started while stopping, too
            known.setdefault(child.pid, child)
        if not any(_alive(p) for p in known.values()):
            break
        time.sleep(0.2)
    for child in _descendants(root_pid):
        known.setdefault(child.pid, child)
    for proc in known.values():
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(known.values()), timeout=5)


def _guard(parent_pid: int, grace_seconds: float, command: list[str]) -> int:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of the tree stay our descendants
    stopping: list[int] = []

    def stop(signum, frame):
        stopping.append(signum)

    for sig in _STOP_SIGNALS:
        signal.signal(sig, stop)
    if os.getppid() != parent_pid:  # the parent died before PR_SET_PDEATHSIG took effect
        return 1
    on_orphaned = json.loads(os.environ.pop(ON_ORPHANED, "null"))
    child = subprocess.Popen(command)  # in our process group: killpg reaches it and its children
    group = os.getpgid(0)
    while not stopping and child.poll() is None:
        if os.getppid() != parent_pid:  # parent gone (platforms without PR_SET_PDEATHSIG)
            stopping.append(signal.SIGTERM)
            break
        time.sleep(0.2)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # killpg below must not stop us half-way
    orphaned = bool(stopping) and os.getppid() != parent_pid
    stop_tree(os.getpid(), group, 0.0 if orphaned else grace_seconds)
    if orphaned and on_orphaned:
        try:
            subprocess.run(on_orphaned, timeout=60, check=False, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as exc:
            print(f"process_guard: {' '.join(on_orphaned)} failed: {exc}", file=sys.stderr)
    if stopping or child.returncode is None:
        return 128 + (stopping[0] if stopping else signal.SIGTERM)
    # Killed by a signal (the OOM killer's SIGKILL): 128 + signal, as a shell reports it.
    return 128 - child.returncode if child.returncode < 0 else child.returncode


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: python -m tasks.process_guard PARENT_PID GRACE -- COMMAND...", file=sys.stderr)
        return 2
    return _guard(int(argv[0]), float(argv[1]), argv[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""One trainer per run folder: ``DIR/.lock`` names the process that trains it.

Two trainers on one folder would write the same checkpoints, delete each other's and
interleave their metrics. The lock is a file created exclusively (``O_EXCL``, atomic on local
and NFS v3+ file systems) holding the owner's host and process id; a lock left by a process
that is gone, on this host, is taken over (saying so). A lock held from another host cannot be
checked from here: it is refused, naming the host, and the user removes it when that
trainer is known to be gone.
"""

import contextlib
import json
import os
import socket
import time

LOCK_FILE = ".lock"


class RunFolderBusy(ValueError):
    """Another live trainer holds the run folder."""


def _alive(pid):
    """Whether a process with this id runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _read_owner(path):
    try:
        with open(path, encoding="utf-8") as f:
            owner = json.load(f)
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}  # a lock half-written by a killed process: no owner to wait for


def _try_create(path, owner):
    try:
        handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(handle, "w", encoding="utf-8") as f:
        json.dump(owner, f)
        f.flush()
        os.fsync(f.fileno())
    return True


def acquire(model_dir, *, log=print):
    """Takes the lock of ``model_dir`` (created if missing) for this process.

    Raises:
        RunFolderBusy: when a live process (or a process on another host) holds it.
    """
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, LOCK_FILE)
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
    for _ in range(3):  # a takeover races at most with another takeover
        if _try_create(path, owner):
            return path
        held = _read_owner(path)
        pid, host = held.get("pid"), held.get("host")
        if host == owner["host"] and pid == owner["pid"]:
            return path  # this process already holds it (a second train() call)
        if host not in (None, owner["host"]) or (isinstance(pid, int) and _alive(pid)):
            raise RunFolderBusy(
                f"{model_dir} is being trained by process {pid} on {host} (lock {path}); wait "
                "for it to finish, or remove the lock if that trainer is gone.")
        log(f"taking over the lock of {model_dir}: its process ({pid} on {host}) is gone")
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    raise RunFolderBusy(f"{model_dir}: could not take the lock {path}; another trainer keeps "
                        "taking it.")


def release(path):
    """Gives the lock back (only if this process still holds it)."""
    held = _read_owner(path)
    if held.get("pid") == os.getpid() and held.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


@contextlib.contextmanager
def held(model_dir, *, log=print):
    """``with held(model_dir):`` the body runs holding the run folder's lock."""
    path = acquire(model_dir, log=log)
    try:
        yield path
    finally:
        release(path)

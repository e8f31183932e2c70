"""Output files: checked before the long work starts, written atomically, never half-written.

``check_output_path`` runs first (a missing or read-only folder, a path that is a folder, a
disk without room for the expected size: one line with the fix, before minutes of export or
profiling). ``atomic_output`` writes into a temporary file beside the target and renames it
into place only when everything succeeded; on any failure, Ctrl-C included, the temporary
file is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

from .errors import SSIError


def check_output_path(path: str | os.PathLike, what: str = "--output", suffix: str | None = None,
                      expected_bytes: int = 0, create_parent: bool = False) -> Path:
    """``path`` can be written: not a folder, its folder exists (or is created with
    ``create_parent``) and takes files, room for ``expected_bytes``. Returns it as a Path."""
    p = Path(path)
    if not str(path).strip():
        raise SSIError(f"{what} is empty; give a file name")
    if p.is_dir():
        raise SSIError(f"{what} {p} is a directory; give a file name, e.g. {p / ('out' + (suffix or '.json'))}")
    if suffix is not None and p.suffix != suffix:
        raise SSIError(f"{what} {p} must end in {suffix}")
    parent = p.parent if str(p.parent) else Path(".")
    if create_parent and not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SSIError(f"{what} {p}: cannot create the directory {parent} "
                           f"({e.strerror or e}); choose a writable place") from None
    if not parent.exists():
        raise SSIError(f"{what} {p}: the directory {parent} does not exist; create it first")
    if not parent.is_dir():
        raise SSIError(f"{what} {p}: {parent} is not a directory")
    if p.exists() and not os.access(p, os.W_OK):
        raise SSIError(f"{what} {p} exists and is not writable; fix its permissions or choose "
                       "another path")
    try:  # os.access misses read-only mounts and ACLs: try it for real
        fd, probe = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise SSIError(f"{what} {p}: cannot write into {parent} ({e.strerror or e}); choose a "
                       "writable directory") from None
    if expected_bytes > 0:
        free = shutil.disk_usage(parent).free
        if free < expected_bytes:
            raise SSIError(f"{what} {p}: {parent} has {free / 1e6:.0f} MB free, the file needs "
                           f"about {expected_bytes / 1e6:.0f} MB; free space or choose another "
                           "directory")
    return p


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, what: str = "output"):
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block ends
    without error, remove it otherwise (also on KeyboardInterrupt)."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent or Path("."))
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, p)
    except OSError as e:
        _remove(tmp_path)
        if e.errno == errno.ENOSPC:
            raise SSIError(f"the disk filled up while writing {what} {p}; nothing was written: "
                           "free space or choose another directory") from None
        if e.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise SSIError(f"cannot write {what} {p} ({e.strerror}); choose a writable "
                           "directory") from None
        raise
    except BaseException:
        _remove(tmp_path)
        raise


def write_text_atomic(path: str | os.PathLike, text: str, what: str = "output") -> Path:
    with atomic_output(path, what) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, what: str = "output") -> Path:
    with atomic_output(path, what) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove(p: Path) -> None:
    with contextlib.suppress(OSError):
        p.unlink()

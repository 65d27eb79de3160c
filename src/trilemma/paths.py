"""Where trilemma writes, checked before any compute: owned run directories, bench directories, output files.

A run directory (`trilemma train --out DIR`) holds `checkpoint/`, `samples/`, `config.json` and two hidden
files: `.trilemma-run` (it marks DIR as a run directory that train created) and `.lock`, which the training
process holds for its lifetime (an advisory `flock`, released by the kernel however the process ends), so a
second writer is refused and a lock left by a killed process is taken over with one line saying so.

It also holds the file primitives every writer and reader shares, so each is written once: `atomic_write`
(temporary sibling, fsync, rename), `fsync_file` / `fsync_dir`, `sha256_file`, and `read_safetensors` with
its one-line error (`error_line`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from .errors import TrilemmaError

SHIPPED_PREFIX = "trilemma:"  # "trilemma:toy2d-ddpm" names a checkpoint shipped in trilemma/assets


def shipped_checkpoint(ref) -> Path | None:
    """The directory of the shipped checkpoint "trilemma:NAME" names (trilemma/assets/NAME, wherever the package is
    installed), None for any other reference; an unknown NAME is a one-line error listing the shipped ones."""
    ref = str(ref)
    if not ref.startswith(SHIPPED_PREFIX):
        return None
    from importlib import resources

    assets = Path(str(resources.files("trilemma") / "assets"))
    path = assets / ref[len(SHIPPED_PREFIX):]
    if not (path / "config.json").is_file():
        names = sorted(p.name for p in assets.iterdir() if (p / "config.json").is_file())
        raise TrilemmaError(f"{ref}: no such shipped checkpoint; shipped: {', '.join(SHIPPED_PREFIX + n for n in names)}")
    return path

RUN_MARKER = ".trilemma-run"
BENCH_MARKER = ".trilemma-bench"
LOCK_NAME = ".lock"
CHECKPOINT_FORMAT = "trilemma-checkpoint"  # the format field of a checkpoint's config.json (checkpoint.FORMAT)


def temp_sibling(path: str | Path, kind: str = "tmp") -> Path:
    """`.NAME.KIND-PID` beside `path`: where this process writes (`tmp`) or sets aside (`old`) the file or
    directory `path` before a rename. Hidden, in the same directory (a rename never crosses filesystems),
    and named after the pid so two processes never share one (checkpoint.write_leftovers parses it)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}")


def fsync_file(path: str | Path) -> None:
    """Flush the file at `path` to disk, so a rename that publishes it never publishes a hole."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: str | Path) -> None:
    """Make a rename in `path` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write the file `path` atomically: `write(tmp)` writes it at a `temp_sibling`, which is fsynced and
    renamed over `path`, so readers see the old or the new file, never a part; on any failure the temporary
    file is removed and `path` is untouched."""
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write` of `text`."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def sha256_file(path: str | Path, into: Any = None) -> Any:
    """`into` (a hashlib object; a fresh SHA-256 when None) updated with the bytes of the file at `path`, read
    in 1 MiB blocks so a large file is never held in memory. The hash object is returned, not its digest, so a
    caller can hash more after the file: `sha256_file(p).hexdigest()` is the file's own SHA-256."""
    h = hashlib.sha256() if into is None else into
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h


def error_line(e: BaseException, text: str | None = None) -> str:
    """A one-line reason for exception `e`: the first non-blank line of `text` (default `str(e)`), at most
    300 characters, else the exception's type name (messages of libraries such as safetensors and PIL can span
    lines, and every TrilemmaError is one line)."""
    lines = [ln.strip() for ln in (str(e) if text is None else text).splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:300]


def read_safetensors(path: str | Path) -> tuple[dict, dict[str, str]]:
    """(tensors on the CPU by name, metadata) of a safetensors file; an unreadable file is a one-line
    TrilemmaError naming it. safetensors (and torch with it) is imported here, only by callers that read one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except Exception as e:  # safetensors raises its own (version-dependent) error types for a bad file
        raise TrilemmaError(f"{path}: not a readable safetensors file ({error_line(e)})") from None


def is_checkpoint_dir(path: Path) -> bool:
    """A checkpoint directory: config.json of the trilemma checkpoint format beside model.safetensors."""
    try:
        meta = json.loads((path / "config.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(meta, dict) and meta.get("format") == CHECKPOINT_FORMAT


def checkpoint_above(path: Path) -> Path | None:
    """The checkpoint directory that `path` is (or lies) inside, if any: nothing is written there, since the
    next checkpoint swap would replace the directory."""
    for p in (Path(path), *Path(path).parents):
        if p.is_dir() and is_checkpoint_dir(p):
            return p
    return None


def is_run_dir(path: Path) -> bool:
    """A directory `trilemma train` created (marker), or one of an older trilemma that holds checkpoint/."""
    return (path / RUN_MARKER).is_file() or (path / "checkpoint" / "config.json").is_file()


def _listing(path: Path) -> str:
    names = sorted(p.name for p in path.iterdir())
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def _check_dir_target(path: Path, what: str, owned) -> None:
    """`path` may be created or reused: not a file, not a checkpoint directory, not a foreign non-empty one."""
    if path.exists() and not path.is_dir():
        raise TrilemmaError(f"{path}: {what} must be a directory, and this is a file")
    if not path.is_dir():
        return
    if is_checkpoint_dir(path):
        hint = f"; its run directory is {path.parent}" if what == "run directory" else ""
        raise TrilemmaError(f"{path} is a checkpoint directory, not a {what} (nothing in a checkpoint directory "
                            f"is overwritten){hint}")
    if not owned(path) and any(path.iterdir()):
        raise TrilemmaError(f"{path} exists and is not a trilemma {what} (it holds {_listing(path)}); "
                            "choose a new or empty directory")


def _make_dir(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise TrilemmaError(f"{path}: cannot write the {what} here ({e.strerror or e})") from None


def check_run_dir(out: Path, probe_lock: bool = True) -> None:
    """Everything about a train --out that can be known before creating it, and (`probe_lock`) whether another
    process is training into it now. The processes of one data-parallel run probe from rank 0 only: another
    rank's probe could meet rank 0's lock."""
    out = Path(out)
    _check_dir_target(out, "run directory", is_run_dir)
    lock = out / LOCK_NAME
    if probe_lock and lock.is_file():
        try:
            f = open(lock)
        except OSError:
            return  # acquire() gives the error
        with f:
            if not try_lock(f):
                raise _in_use(out, _holder(f))
            unlock(f)


def _holder(f) -> str:
    try:
        f.seek(0)
        return f.read().strip()
    except OSError:  # pragma: no cover - a mandatory lock (Windows) may refuse the read
        return ""


def _in_use(out: Path, holder: str) -> TrilemmaError:
    who = f" (pid {holder})" if holder.isdigit() else ""
    return TrilemmaError(f"{out} is being trained by another trilemma process{who}; wait for it to finish or "
                         "choose another --out")


class RunLock:
    """Exclusive ownership of a run directory for a training process's lifetime (see the module docstring)."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.file = None

    def acquire(self) -> str | None:
        """Create or reuse the run directory, take its lock and mark it; returns a one-line note when a lock
        left by a process that no longer runs was taken over, else None."""
        check_run_dir(self.out)
        _make_dir(self.out, "run directory")
        path = self.out / LOCK_NAME
        try:
            f = open(path, "a+")
        except OSError as e:
            raise TrilemmaError(f"{path}: cannot open the run's lock file ({e.strerror or e})") from None
        holder = _holder(f)
        if not try_lock(f):
            f.close()
            raise _in_use(self.out, holder)
        self.file = f
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        if not (self.out / RUN_MARKER).is_file():
            now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
            atomic_write_text(self.out / RUN_MARKER, json.dumps({"created": now}) + "\n")
        if holder.isdigit() and int(holder) != os.getpid():
            return f"{self.out}: took over the lock of process {holder}, which is no longer running"
        return None

    def release(self) -> None:
        """Unlock; the lock file stays (deleting it would race with a process opening it) but is emptied."""
        if self.file is None:
            return
        try:
            self.file.seek(0)
            self.file.truncate()
            self.file.flush()
        finally:
            unlock(self.file)
            self.file.close()
            self.file = None


_WIN_LOCK_OFFSET = 1 << 20  # Windows locks bytes, mandatorily: lock one far past the pid so it stays readable


def try_lock(f) -> bool:
    """Take an exclusive lock on open file `f` without waiting; False if another holds it (flock belongs to the
    open file: a second open of the same file, even in this process, does not get it)."""
    if sys.platform == "win32":  # pragma: no cover
        import msvcrt

        try:
            f.seek(_WIN_LOCK_OFFSET)
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
        finally:
            f.seek(0)
    import fcntl

    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def unlock(f) -> None:
    if sys.platform == "win32":  # pragma: no cover
        import msvcrt

        f.seek(_WIN_LOCK_OFFSET)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
        f.seek(0)
        return
    import fcntl

    fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def is_bench_dir(path: Path) -> bool:
    """A directory `trilemma bench` or `trilemma demo` wrote (marker, or the results of an older version)."""
    return (path / BENCH_MARKER).is_file() or (path / "results.json").is_file()


def check_bench_dir(out: str | Path) -> Path:
    """A bench's --out must be new, empty or an earlier bench's (whose results it replaces)."""
    out = Path(out)
    _check_dir_target(out, "bench directory", is_bench_dir)
    return out


def prepare_bench_dir(out: str | Path) -> Path:
    """`check_bench_dir`, then create and mark it."""
    out = check_bench_dir(out)
    _make_dir(out, "bench results")
    if not (out / BENCH_MARKER).is_file():
        atomic_write_text(out / BENCH_MARKER, "")
    return out


def check_output_file(path: str | Path, option: str, suffixes: tuple[str, ...]) -> Path:
    """An output file the command will write: a known suffix, not a directory, not inside a checkpoint
    directory, and its directory creatable and writable. Checked before any compute."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise TrilemmaError(f"{option} {path}: expected a file ending in {', '.join(suffixes)}")
    if path.is_dir():
        raise TrilemmaError(f"{option} {path}: is a directory")
    parent = path.parent
    for p in (parent, *parent.parents):
        if p.exists():
            if not p.is_dir():
                raise TrilemmaError(f"{option} {path}: {p} is a file, not a directory")
            break
    inside = checkpoint_above(path)
    if inside is not None:
        raise TrilemmaError(f"{option} {path}: {inside} is a checkpoint directory; write elsewhere")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrilemmaError(f"{option} {path}: cannot create {parent} ({e.strerror or e})") from None
    if not os.access(parent, os.W_OK):
        raise TrilemmaError(f"{option} {path}: {parent} is not writable")
    return path


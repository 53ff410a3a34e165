"""Crash-safe file output: a killed run leaves either the previous file or the complete new one.

Files are created with the permissions the umask allows (``0o666 & ~umask``), as ``open`` would.
:func:`locked_directory` keeps a second process from writing into a directory in use.

Example::

    from neuralgrok.storage.files import atomic_write
    with atomic_write("runs/x/summary.json") as f:
        f.write(text)
"""
import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, Optional, Union

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; directories are not locked there
    fcntl = None


class DirectoryInUseError(RuntimeError):
    """Another process holds the directory (see :func:`locked_directory`)."""


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: Union[str, Path], mode: str = "w",
                 before_replace: Optional[Callable[[Path], None]] = None) -> Iterator[IO[Any]]:
    """Yield a file object on a temporary file beside ``path``; on success flush, fsync and
    ``os.replace`` it onto ``path``; on error (a full disk, a kill's exception) delete it, leaving
    ``path`` as it was. ``before_replace(path)`` runs once the new file is complete, just before
    the replace (a checkpoint keeps its previous version there)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode={mode!r}; use 'w' or 'wb'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so os.replace is a rename within one file system (atomic on POSIX).
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp's 0o600, as open() would create it
        with os.fdopen(descriptor, mode, **({"encoding": "utf-8", "newline": ""} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(path)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory):
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_temporaries(directory: Union[str, Path]) -> None:
    """Delete the temporary files a killed :func:`atomic_write` left in ``directory`` (SIGKILL
    cannot be caught, so its cleanup never ran); only safe while nothing else writes there."""
    for temporary in Path(directory).glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def atomic_write_text(path: Union[str, Path], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` with :func:`atomic_write`."""
    with atomic_write(path) as f:
        f.write(text)


@contextlib.contextmanager
def locked_directory(directory: Union[str, Path]) -> Iterator[Path]:
    """Create ``directory`` if needed and hold an exclusive advisory lock on it for the block;
    raise :class:`DirectoryInUseError` at once if another process holds it. The lock is the
    directory's own (``flock`` on it), so nothing is written for it, and the kernel releases it
    when the holder exits, SIGKILL included. Not on Windows (there the block runs unlocked)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield directory
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DirectoryInUseError(f"{directory} is being written by another process (a run or a resume "
                                      f"still going on); wait for it to end, or end it first") from None
        yield directory
    finally:
        os.close(descriptor)  # releases the lock


def toml_value(value: Any) -> str:
    """One TOML value for a flat config: bool, int, float, str, or a list/tuple of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest round-tripping form, always with '.' or 'e'
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in escaped):
            escaped = "".join(c if ord(c) >= 0x20 and ord(c) != 0x7F else f"\\u{ord(c):04x}" for c in escaped)
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as a TOML value")


def to_toml(mapping: Dict[str, Any]) -> str:
    """A flat mapping as TOML text, one ``key = value`` line each, in the mapping's order."""
    return "".join(f"{key} = {toml_value(value)}\n" for key, value in mapping.items())


def read_toml(path: Union[str, Path]) -> Dict[str, Any]:
    """A TOML file as a dict (``tomllib``, or ``tomli`` before Python 3.11)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ImportError("reading TOML needs Python >= 3.11 or the 'tomli' package") from None
    with open(path, "rb") as f:
        return tomllib.load(f)


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in nested dicts, lists and tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def strict_json(value: Any) -> str:
    """``value`` as indented, strict JSON text (non-finite floats as null: no NaN or Infinity, which
    JSON has not), with a final newline."""
    return json.dumps(finite_or_none(value), indent=2, allow_nan=False) + "\n"

"""Crash-safe file output: a killed run leaves either the previous file or the complete new one.

Example::

    from neuralgrok.files import atomic_write
    with atomic_write("runs/x/summary.json") as f:
        f.write(text)
"""
import contextlib
import math
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path, mode="w"):
    """Yield a file object on a temporary file beside ``path``; on success flush, fsync and
    ``os.replace`` it onto ``path``; on error delete it, leaving ``path`` as it was."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode={mode!r}; use 'w' or 'wb'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so os.replace is a rename within one file system (atomic on POSIX).
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, mode, **({"encoding": "utf-8", "newline": ""} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
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


def remove_temporaries(directory):
    """Delete the temporary files a killed :func:`atomic_write` left in ``directory`` (SIGKILL
    cannot be caught, so its cleanup never ran); only safe while nothing else writes there."""
    for temporary in Path(directory).glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def atomic_write_text(path, text):
    with atomic_write(path) as f:
        f.write(text)


def toml_value(value):
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


def to_toml(mapping):
    """A flat mapping as TOML text, one ``key = value`` line each, in the mapping's order."""
    return "".join(f"{key} = {toml_value(value)}\n" for key, value in mapping.items())


def read_toml(path):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ImportError("reading TOML needs Python >= 3.11 or the 'tomli' package") from None
    with open(path, "rb") as f:
        return tomllib.load(f)

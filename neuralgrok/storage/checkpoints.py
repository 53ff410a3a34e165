"""Checkpoint files that prove their integrity, and loading of weight files without running code.

A checkpoint is one file: a header line naming the format, the SHA-256 and the length of the
payload, then the payload, a ``torch.save`` of the state::

    NEURALGROK-CHECKPOINT 1 sha256=<64 hex digits> bytes=<length>\\n<torch.save bytes>

:func:`read_checkpoint` checks the header, the length (a truncated file) and the checksum (a damaged
one) before unpickling anything, and raises :class:`CheckpointError`, one line naming the file and
what is wrong. :func:`write_checkpoint` writes atomically and keeps the checkpoint it replaces as
``<name>.prev.pt`` beside it (a hard link, so no copy), the older checkpoint a run can fall back on.

Loading uses ``torch.load(weights_only=True)`` wherever the installed torch can read the payload
that way (:func:`weights_only_supported`: torch 2.x; torch 1.13's weights-only loader cannot read
Python floats, so there a checkpoint is unpickled in full). A full unpickle can run any code the
file's author put in it: the checksum proves the file is the one written, not that it is safe; load
checkpoints and weight files only from run directories you trust.

Example::

    from neuralgrok.storage.checkpoints import read_checkpoint, write_checkpoint
    write_checkpoint("runs/x/checkpoint.pt", {"step": 10, "model": model.state_dict()})
    state = read_checkpoint("runs/x/checkpoint.pt")
"""
import contextlib
import functools
import hashlib
import inspect
import io
import os
import re
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from .files import atomic_write

MAGIC = b"NEURALGROK-CHECKPOINT 1 "
_HEADER = re.compile(rb"NEURALGROK-CHECKPOINT 1 sha256=([0-9a-f]{64}) bytes=([0-9]+)\n")
_HEADER_MAX = 160  # bytes read to find the header line
PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, truncated, damaged, of an older format, or unreadable."""

    def __init__(self, path: PathLike, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


def previous_path(path: PathLike) -> Path:
    """Where :func:`write_checkpoint` keeps the checkpoint that ``path`` had before: ``<stem>.prev<suffix>``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


@functools.lru_cache(maxsize=None)
def weights_only_supported() -> bool:
    """Whether ``torch.load(weights_only=True)`` reads what a checkpoint holds besides tensors (floats,
    ints, strings, None, tuples, lists, dicts): feature-detected once, not read from a version string."""
    if "weights_only" not in inspect.signature(torch.load).parameters:
        return False
    buffer = io.BytesIO()
    torch.save({"float": 1.5, "tuple": (1, None, "s", True), "list": [2.0], "tensor": torch.zeros(1)}, buffer)
    buffer.seek(0)
    try:
        torch.load(buffer, map_location="cpu", weights_only=True)
    except Exception:  # 1.13: its weights-only unpickler rejects Python floats
        return False
    return True


def _load(source, weights_only: bool):
    if weights_only:
        return torch.load(source, map_location="cpu", weights_only=True)
    if "weights_only" in inspect.signature(torch.load).parameters:  # 2.6+ defaults to True: say it
        return torch.load(source, map_location="cpu", weights_only=False)
    return torch.load(source, map_location="cpu")


def load_error_text(error: BaseException) -> str:
    """One line saying why ``torch.load`` failed (torch's weights-only message is a page long, and
    suggests a full unpickle, which is not ours to suggest)."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        detail = next((line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines()
                       if line.strip()), "")
        return f"not a plain torch.save file of tensors and numbers (the weights-only loader: {detail})"
    return (text.strip().splitlines() or [type(error).__name__])[0]


def write_checkpoint(path: PathLike, state: Dict[str, Any], keep_previous: bool = True) -> None:
    """Write ``state`` to ``path`` with its checksum, atomically; with ``keep_previous`` the file it
    replaces stays as :func:`previous_path` (a hard link where the file system has them, else a rename
    just before the new file takes its place)."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getbuffer()
    header = MAGIC + f"sha256={hashlib.sha256(payload).hexdigest()} bytes={len(payload)}\n".encode()
    with atomic_write(path, "wb", before_replace=_keep_previous if keep_previous else None) as f:
        f.write(header)
        f.write(payload)


def _keep_previous(path: Path) -> None:
    # Called with the new file complete beside `path`: `path` stays a complete checkpoint throughout
    # (old until the new one's rename), and the previous one is renamed into place whole.
    if not path.exists():
        return
    previous = previous_path(path)
    link = previous.with_name(f".{previous.name}.link.tmp")
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    try:
        os.link(path, link)
    except OSError:  # no hard links here: the old file moves (a kill now leaves only the previous one)
        os.replace(path, previous)
        return
    os.replace(link, previous)


def checkpoint_problem(path: PathLike) -> Optional[str]:
    """What is wrong with the checkpoint file at ``path`` (None if its header, length and checksum
    hold); reads the whole file but unpickles nothing."""
    try:
        _verified_payload(path)
    except CheckpointError as error:
        return error.problem
    return None


def _verified_payload(path: PathLike) -> bytes:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(path, "no such file") from None
    except OSError as error:
        raise CheckpointError(path, f"cannot be read ({error.strerror or error})") from None
    if not data.startswith(MAGIC):
        what = ("a checkpoint without a checksum, written by an older neuralgrok" if data[:2] == b"PK"
                else "empty" if not data else "not a neuralgrok checkpoint")
        raise CheckpointError(path, what)
    match = _HEADER.match(data[:_HEADER_MAX])
    if match is None:
        raise CheckpointError(path, "its header is damaged")
    payload, expected = data[match.end():], int(match.group(2))
    if len(payload) != expected:
        raise CheckpointError(path, f"truncated or extended: {len(payload):,} bytes of data where its header "
                                    f"says {expected:,}")
    if hashlib.sha256(payload).hexdigest() != match.group(1).decode():
        raise CheckpointError(path, "checksum mismatch: the file is damaged")
    return payload


def read_checkpoint(path: PathLike) -> Dict[str, Any]:
    """The state :func:`write_checkpoint` wrote to ``path``, after checking its length and checksum;
    raises :class:`CheckpointError` (one line: the file and what is wrong)."""
    payload = _verified_payload(path)
    try:
        state = _load(io.BytesIO(payload), weights_only_supported())
    except Exception as error:  # verified bytes that still do not load: another torch, say
        raise CheckpointError(path, f"cannot be loaded by this torch {torch.__version__}: "
                                    f"{load_error_text(error)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(path, f"holds a {type(state).__name__}, not a checkpoint's dict")
    return state


def load_weights(path: PathLike) -> Any:
    """A ``torch.save`` file of tensors (a state dict: ``amplifier.pt``, model weights) loaded on the CPU,
    with ``weights_only=True`` where the installed torch has it (1.13 does, for tensors)."""
    return _load(path, "weights_only" in inspect.signature(torch.load).parameters)

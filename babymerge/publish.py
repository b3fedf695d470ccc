"""Publishing outputs atomically: a killed run never leaves a half-written output.

* ``atomic_output_dir``: everything is written into a temporary sibling directory that is
  published under its final name only when complete, so a failure (bad tensor, Ctrl-C,
  SIGTERM, full disk) never leaves a partial checkpoint that could later be mistaken for a
  good one. Publishing is also *exclusive*: a directory that appeared at the final name
  meanwhile (another merge, another user) is never replaced. The temporary directory's name
  records the host and process that own it, so a later run removes the leftovers of a
  writer that was killed with SIGKILL, and never those of a writer still running
  (``babymerge.temporaries``).
* ``write_file_atomic``: the same for one file (``write_files_atomic``: for files that belong
  together); ``output_errors`` reports a full or read-only disk in one line.
* ``check_outside_inputs``: an output may not be, contain or lie inside an input.

Errors name the library argument that chose the output in backquotes (`` `out` ``); a
command line shows its own flag instead (``babymerge.cli``).

Files and folders are created with ``open``/``os.mkdir`` and the modes 0o666/0o777, so they
get the user's umask like any other program's output (``tempfile.mkstemp``/``mkdtemp``
would make them 0600/0700: private to the user even where the group should read them).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import signal
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import BabyMergeError
from .temporaries import remove_stale_temporaries, temp_name


# -- SIGTERM like SIGINT ----------------------------------------------------------------------
class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM while an output is being written, so the
    temporary files are removed as on Ctrl-C; exits with 143 (128 + SIGTERM) like the default."""


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """SIGTERM (what schedulers and ``timeout`` send) raises ``Terminated`` for the duration.
    Only where Python's default disposition was in place: a handler set by the application
    (lm-eval, accelerate, a user) is left alone. Signals can only be set in the main thread."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    if not in_main_thread or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    received: list[int] = []

    def handler(signum, frame):
        received.append(signum)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
        raise Terminated(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except BaseException as err:
        # Native code that was running when the signal came may swallow our exception and raise its own
        # (safetensors' slicing turns it into "ValueError: could not determine the shape..."): the
        # signal, not that error, is why the block ended.
        if received and not isinstance(err, Terminated):
            raise Terminated(128 + received[0]) from err
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


# -- exclusive rename ---------------------------------------------------------------------------
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """Linux ``renameat2(src, dst, flags)``; False where it does not exist (not Linux, old
    glibc or kernel, a file system that refuses the flag), OSError for real failures."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(dst))


def publish_exclusive(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out`` only if nothing exists at ``out``; FileExistsError otherwise.

    ``os.rename`` is not enough: on POSIX it silently replaces an *empty* directory at the
    destination, and an exists-check before it races with other writers. Linux's
    ``renameat2(RENAME_NOREPLACE)`` makes the check and the rename one atomic step. Where it
    is missing we claim the name with ``os.mkdir`` (atomic and exclusive: of two writers only
    one creates it) and then rename onto our own empty directory; should someone else put a
    file into it in between, the rename fails (ENOTEMPTY) and their file survives.
    """
    try:
        if _renameat2(tmp, out, _RENAME_NOREPLACE):
            return
    except OSError as err:
        if err.errno == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "exists", str(out)) from None
        raise
    os.mkdir(out)  # FileExistsError if taken
    try:
        os.rename(tmp, out)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.rmdir(out)  # only if still our empty claim
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise FileExistsError(errno.EEXIST, "someone wrote into the claimed directory", str(out)) from None
        raise


def _replace_owned(tmp: Path, out: Path, identity: tuple[int, int]) -> None:
    """Swap ``tmp`` in for ``out``, which must still be the directory we checked (``identity``:
    device and inode). ``RENAME_EXCHANGE`` swaps both names in one step, so there is never no
    checkpoint at ``out``; the fallback moves the old one aside first and back on failure."""
    _check_same(out, identity)
    try:
        if _renameat2(tmp, out, _RENAME_EXCHANGE):
            _remove_tree(tmp)  # now holds the old output
            return
    except FileNotFoundError:
        raise _changed(out) from None
    old = out.parent / temp_name(out.name, "old")
    os.rename(out, old)
    try:
        publish_exclusive(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rename(old, out)
        raise
    _remove_tree(old)


def _identity(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_dev, st.st_ino


def _check_same(out: Path, identity: tuple[int, int]) -> None:
    try:
        if _identity(out) == identity:
            return
    except FileNotFoundError:
        pass
    raise _changed(out)


def _changed(out: Path) -> BabyMergeError:
    return BabyMergeError(
        f"output directory {str(out)!r} was replaced or removed by another process while this one was writing; "
        "left it as it is and discarded this result: run again"
    )


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


# -- errors the user can act on -----------------------------------------------------------------
def _os_error(err: OSError, out: Path, argument: str = "`out`") -> BabyMergeError | None:
    """A full or read-only disk, no permission, a file in the way: say so, not a traceback.
    ``argument``: the argument that named ``out``, for "choose another ..."."""
    where = f"output {str(out)!r}"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return BabyMergeError(
            f"no space left on the device (or quota exceeded) while writing {where}; free some space or choose another {argument}"
        )
    if err.errno == errno.EROFS:
        return BabyMergeError(f"cannot write {where}: the file system is read-only; choose another {argument}")
    if err.errno in (errno.EACCES, errno.EPERM):
        denied = err.filename or out.parent
        return BabyMergeError(f"cannot write {where}: permission denied on {denied}; choose another {argument}")
    if err.errno in (errno.ENOTDIR, errno.EEXIST) and err.filename and not Path(err.filename).is_dir():
        blocker = next((p for p in [out, *out.parents] if p.exists() and not p.is_dir()), err.filename)
        return BabyMergeError(
            f"cannot write {where}: {str(blocker)!r} is a file, not a directory; choose another {argument}"
        )
    return None


def _blocking_file(out: Path) -> Path | None:
    return next((p for p in out.parents if p.exists() and not p.is_dir()), None)


def _overlaps(out: Path, protected: Path) -> str | None:
    """How ``out`` overlaps ``protected`` (both resolved), or None."""
    if out == protected:
        return "is"
    if out in protected.parents:
        return "contains"
    if protected in out.parents:
        return "lies inside"
    return None


def check_outside_inputs(
    out: str | Path, inputs: Iterable[str | Path | None], argument: str = "`out`", what: str = "output"
) -> None:
    """Refuse an output (``what``: "output directory", ...) that is, contains or lies inside one
    of ``inputs`` (None entries are skipped): writing it would destroy that input, whatever
    overwrite allows."""
    resolved = Path(os.path.realpath(out))
    for path in filter(None, inputs):
        how = _overlaps(resolved, Path(os.path.realpath(path)))
        if how:
            raise BabyMergeError(
                f"{what} {str(out)!r} {how} the input {str(path)!r}: writing it would destroy that input; "
                f"choose {argument} outside the inputs"
            )


def write_file_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write a whole file under a temporary name in the same folder, then rename it over ``path``.

    The temporary name records its owner (see ``remove_stale_temporaries``); the file is
    created with mode 0o666 so that the umask applies, as for any file the user writes."""
    return write_files_atomic({path: data})[0]


def write_files_atomic(files: dict[str | Path, str | bytes]) -> list[Path]:
    """``write_file_atomic`` for files that belong together (a prediction file and its summary):
    every one is written under its temporary name before any is renamed, so a full disk leaves
    the earlier files as they were, never a new one beside an old one."""
    temporaries: dict[Path, Path] = {}
    try:
        for path, data in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(path.parent, path.name)
            tmp = path.parent / temp_name(path.name, "tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            temporaries[path] = tmp
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
        for path, tmp in temporaries.items():
            os.replace(tmp, path)
    except BaseException:
        for tmp in temporaries.values():
            tmp.unlink(missing_ok=True)
        raise
    return list(temporaries)


@contextlib.contextmanager
def output_errors(out: str | Path, argument: str = "`out`") -> Iterator[None]:
    """An OSError of writing ``out`` in the block that the user can act on (see ``_os_error``) becomes
    a one-line ``BabyMergeError`` (``argument``: the argument that named ``out``); others pass
    unchanged. Wrap only writes: a read error elsewhere would be blamed on ``out``."""
    try:
        yield
    except OSError as err:
        raise (_os_error(err, Path(out), argument) or err) from err


@contextlib.contextmanager
def atomic_output_dir(
    out: str | Path,
    overwrite: bool | str = False,
    *,
    protect: Iterable[str | Path] = (),
    owner_marker: str | None = None,
) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out`` only if the block finishes.

    Args:
        out: the final directory.
        overwrite: False: refuse an existing ``out``. True: replace it, but where
            ``owner_marker`` is given only a directory holding that file (one this program
            wrote). ``"any"``: replace whatever directory is there.
        protect: paths (the inputs) that ``out`` may not be, contain or lie inside, even with
            ``overwrite="any"``: replacing ``out`` would destroy them.
        owner_marker: a file name that marks directories this program wrote.

    ``out`` is published exclusively (``publish_exclusive``): if a directory appears at ``out``
    while the block runs, it is left as it is and this result is discarded with an error; with
    ``overwrite`` only the very directory checked at the start is replaced. SIGTERM removes
    the temporary directory as Ctrl-C does; after SIGKILL the next run with the same ``out``
    removes it (``remove_stale_temporaries``). A full or read-only disk or a file in the way
    is reported as a ``BabyMergeError``.
    """
    out = Path(out)
    if overwrite not in (False, True, "any"):
        raise BabyMergeError(f"overwrite must be False, True or 'any', got {overwrite!r}")
    check_outside_inputs(out, protect, what="output directory")
    resolved = Path(os.path.realpath(out))
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise BabyMergeError(
            f"output directory {str(out)!r} is the current directory or contains it: the output replaces `out` as a "
            "whole; choose a new directory, e.g. `out='merged'`"
        )
    blocker = _blocking_file(out)
    if blocker is not None:
        raise BabyMergeError(
            f"cannot write output {str(out)!r}: {str(blocker)!r} is a file, not a directory; choose another `out`"
        )
    identity = None
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise BabyMergeError(
                f"output {str(out)!r} exists and is not a directory; remove it or choose another `out`"
            )
        if not overwrite:
            raise BabyMergeError(
                f"output directory {str(out)!r} already exists; choose another or pass `overwrite=True`"
            )
        if overwrite is True and owner_marker and not (out / owner_marker).is_file():
            raise BabyMergeError(
                f"output directory {str(out)!r} exists and was not written by babymerge (it has no {owner_marker}); "
                "`overwrite=True` replaces only earlier outputs of babymerge. Choose another `out`, or pass "
                "`overwrite='any'` to replace this directory and everything in it"
            )
        identity = _identity(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out.parent, out.name)
        tmp = out.parent / temp_name(out.name, "tmp")
        os.mkdir(tmp)  # mode 0o777 & ~umask
    except OSError as err:
        raise (_os_error(err, out) or err) from err
    with _terminate_cleanly():
        try:
            yield tmp
            if identity is None:
                try:
                    publish_exclusive(tmp, out)
                except FileExistsError:
                    raise BabyMergeError(
                        f"output directory {str(out)!r} was created by another process while this one was writing "
                        "(another merge to the same `out`?); left it as it is and discarded this result. "
                        "Choose another `out`, or pass `overwrite=True` if it is yours to replace"
                    ) from None
            else:
                _replace_owned(tmp, out, identity)
        except BaseException as err:
            _remove_tree(tmp)
            mapped = _os_error(err, out) if isinstance(err, OSError) else None
            if mapped is not None:
                raise mapped from err
            raise

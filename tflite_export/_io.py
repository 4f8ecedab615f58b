"""Safe file writing: atomic files, a lock per output, recognisable temporaries.

Every file tflite_export produces is first written to a temporary file in the
destination folder and then moved into place with `os.replace`, so a reader
never sees a half-written `.tflite` or report and a crash leaves no partial
file under the final name.

`export` writes three files (the `.tflite` and its two reports) as one unit:

* `OutputLock`: an exclusive `fcntl.flock` on a hidden lock file beside the
  output, `.<stem>.tflite_export.lock`, held for the whole export. The kernel
  releases it when the process dies, so a killed export never blocks the next
  one; a second export of the same path waits at most `timeout` seconds and
  then fails with `OutputBusyError`. The file is removed when the export ends.
* `WorkDir`: a hidden folder beside the output,
  `.<stem>.tflite_export-<pid>-<random>.tmp`, that holds everything an export
  writes before it commits (the temporary SavedModel, the `.tflite`, the
  reports). It is removed when the export ends, whether it succeeded or
  raised.
* `WorkDir.commit`: the finished files are fsynced, a journal listing the
  renames is written (`commit.json`), then the files are renamed into place.
  If the process dies between the renames, the next export to that folder
  finishes them from the journal (`clean_stale`), so the three files end up
  from one export.
* `clean_stale`: removes work folders, temporary files and lock files of
  exports whose process is dead (the PID in the name no longer exists),
  never those of a live export.

Temporary files and folders are created with the mode a plain `open(path,
"w")` gives (0o666 less the umask), and a replaced file keeps its mode.
"""

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
import uuid

from absl import logging

TAG = "tflite_export"
JOURNAL = "commit.json"
# `.<key>.tflite_export-<pid>-<random>.tmp` (work folders and temporary files)
# and `.<key>.tflite_export.lock`.
_TEMP_RE = re.compile(r"^\.(?P<key>.+)\." + TAG + r"-(?P<pid>\d+)-[0-9A-Za-z_]+\.tmp$")
_LOCK_RE = re.compile(r"^\.(?P<key>.+)\." + TAG + r"\.lock$")
_MAX_KEY = 80
# What another process may hold a lock for without exporting (cleaning up):
# even lock_timeout=0 waits this long before reporting the path as busy.
LOCK_GRACE_S = 2.0
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


class OutputBusyError(ValueError):
    """Another export is writing the same output path."""


def check_output_folder(path, argument="output_path"):
    """Checks that the folder that will hold `path` exists.

    Args:
      path: The file path that is about to be written.
      argument: Name of the argument `path` came from, for the error message.

    Returns:
      The absolute path.

    Raises:
      ValueError: If the folder does not exist or `path` is a folder.
    """
    raw = os.fspath(path)
    if isinstance(raw, bytes):
        raw = os.fsdecode(raw)
    path = os.path.abspath(raw)
    if raw.endswith((os.sep, "/")) or (os.altsep and raw.endswith(os.altsep)):
        raise ValueError(
            f"{argument}={raw!r} ends with a path separator; pass a file path such as "
            f"{os.path.join(path, 'model.tflite')!r}."
        )
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise ValueError(
            f"{argument}={path!r}: the folder {folder!r} does not exist. "
            "Create it first (for example with os.makedirs) or choose another path."
        )
    if os.path.isdir(path):
        raise ValueError(
            f"{argument}={path!r} is a folder; pass a file path such as "
            f"{os.path.join(path, 'model.tflite')!r}."
        )
    return path


def check_name_lengths(paths, argument="output_path"):
    """Raises ValueError if a file name is longer than its file system allows."""
    for path in paths:
        folder, name = os.path.split(path)
        try:
            limit = os.pathconf(folder, "PC_NAME_MAX")
        except (OSError, ValueError):
            limit = 255
        if len(os.fsencode(name)) > limit:
            raise ValueError(
                f"{argument}: the file name {name!r} is {len(os.fsencode(name))} bytes, more "
                f"than the {limit} bytes the file system of {folder!r} allows; choose a "
                "shorter output file name."
            )


def name_key(name):
    """A short file-name-safe key for `name`, used in lock and temporary names."""
    if len(os.fsencode(name)) <= _MAX_KEY:
        return name
    digest = hashlib.sha1(os.fsencode(name)).hexdigest()[:10]
    return name[:_MAX_KEY // 2] + "-" + digest


def _temp_prefix(key):
    return f".{key}.{TAG}-{os.getpid()}-"


def lock_path(folder, key):
    """The lock file of the outputs with this key in `folder`."""
    return os.path.join(folder, f".{key}.{TAG}.lock")


def _no_space_error(e, path):
    folder = os.path.dirname(os.path.abspath(path))
    return OSError(
        e.errno,
        f"{os.strerror(e.errno)} while writing {path!r}; nothing was left half-written. "
        f"Free space in {folder!r} or choose an output folder on another disk.",
        path,
    )


def write_new_file(path, data, mode=None):
    """Creates `path` (which must not exist), writes `data` and fsyncs it.

    The file gets the mode `open(path, "w")` would give (0o666 less the
    umask), or `mode` if given. On failure the partial file is removed; a full
    disk raises an `OSError` that names the folder and the remedy.

    Args:
      path: A new file.
      data: The bytes to write.
      mode: Permission bits, e.g. those of the file this one will replace.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if mode is not None:
                os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException as e:
        remove_quietly(path)
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            raise _no_space_error(e, path) from e
        raise


def existing_mode(path):
    """Permission bits of the regular file `path` replaces, or None (new file)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None


def temp_path_beside(path):
    """Creates an empty temporary file in the folder of `path`.

    The temporary file lives in the same folder so that the final
    `os.replace` is a rename on one file system, which is atomic. Its name,
    `.<name>.tflite_export-<pid>-<random>.tmp`, lets `clean_stale` remove it
    if this process dies; its mode is what `open(path, "w")` would give.

    Args:
      path: The final destination.

    Returns:
      The path of the new temporary file.
    """
    folder, name = os.path.split(os.path.abspath(path))
    prefix = _temp_prefix(name_key(name))
    while True:
        tmp = os.path.join(folder, f"{prefix}{uuid.uuid4().hex[:12]}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp


def fsync_folder(folder):
    """Makes renames in `folder` durable (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path, data):
    """Writes `data` to `path` atomically.

    A replaced file keeps its mode; a new one gets the umask's.

    Args:
      path: Destination file; its folder must exist.
      data: The bytes to write.
    """
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f"{_temp_prefix(name_key(name))}{uuid.uuid4().hex[:12]}.tmp")
    write_new_file(tmp, data, mode=existing_mode(path))
    try:
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    fsync_folder(folder)


def atomic_write_text(path, text):
    """Writes `text` (UTF-8) to `path` atomically.

    Args:
      path: Destination file; its folder must exist.
      text: The text to write.
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_quietly(path):
    """Removes `path` if it exists; cleanup must never mask the real error."""
    try:
        os.remove(path)
    except OSError:
        pass


def file_sha256(path):
    """Hex SHA-256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pid_alive(pid):
    """True unless no process with this PID exists (PID reuse counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


class OutputLock:
    """An exclusive `flock` on the lock file of one output, as a context manager.

    Args:
      folder: The output folder.
      key: `name_key` of the output's stem (shared by the `.tflite` and its
        reports).
      output_path: The output, for messages.
      timeout: Seconds to wait for another export of the same output (at
        least `LOCK_GRACE_S`).
      argument: Argument name for messages.

    Raises (on enter):
      ValueError: If the folder is not writable.
      OutputBusyError: If another export holds the lock after `timeout`.
    """

    def __init__(self, folder, key, output_path, timeout=0.0, argument="output_path"):
        self.path = lock_path(folder, key)
        self._folder = folder
        self._output = output_path
        self._timeout = max(float(timeout), LOCK_GRACE_S)
        self._argument = argument
        self._fd = None

    def _open(self):
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise ValueError(
                    f"{self._argument}={self._output!r}: the folder {self._folder!r} is not "
                    f"writable ({e.strerror}); nothing was converted. Choose a folder you can "
                    f"write to, or make it writable (e.g. chmod u+w {self._folder!r})."
                ) from e
            if e.errno in _NO_SPACE:
                raise _no_space_error(e, self.path) from e
            raise

    def try_acquire(self):
        """Takes the lock if it is free; returns whether it did."""
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except OSError as e:
                if e.errno not in _NO_LOCKS:
                    os.close(fd)
                    raise
                logging.warning("%s: the file system does not support file locks (%s); two "
                                "exports of the same output at once are not detected.",
                                self.path, e.strerror)
                self._fd = fd
                return True
            except BaseException:
                os.close(fd)
                raise
            # The holder before us may have removed the file after we opened it:
            # only the file still at the path counts.
            try:
                on_disk = os.stat(self.path)
            except FileNotFoundError:
                os.close(fd)
                continue
            mine = os.fstat(fd)
            if (on_disk.st_dev, on_disk.st_ino) != (mine.st_dev, mine.st_ino):
                os.close(fd)
                continue
            self._fd = fd
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError:
                pass  # The PID is only for messages.
            return True

    def _holder(self):
        try:
            with open(self.path, encoding="ascii", errors="replace") as f:
                text = f.read().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def acquire(self):
        deadline = time.monotonic() + self._timeout
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                holder = self._holder()
                who = f"process {holder}" if holder else "another process"
                raise OutputBusyError(
                    f"{self._argument}={self._output!r}: another export ({who}) is writing "
                    f"this path (lock file {self.path!r}); waited {self._timeout:g} s. Wait "
                    "for it to finish, pass lock_timeout=<seconds> (CLI: --lock_timeout) to "
                    "wait longer, or choose another output path."
                )
            time.sleep(0.05)
        return self

    def release(self):
        """Removes the lock file (while still holding it) and releases it."""
        if self._fd is None:
            return
        remove_quietly(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class WorkDir:
    """The hidden folder beside an output that holds an export's temporaries.

    Args:
      folder: The output folder.
      key: `name_key` of the output's stem.
    """

    def __init__(self, folder, key):
        self.folder = folder
        try:
            self.path = tempfile.mkdtemp(prefix=_temp_prefix(key), suffix=".tmp", dir=folder)
        except OSError as e:
            if e.errno in _NO_SPACE:
                raise _no_space_error(e, folder) from e
            raise
        self.committed = False
        self._keep = False

    def file(self, name):
        """Path of a file in the work folder."""
        return os.path.join(self.path, name)

    def commit(self, moves):
        """Moves finished files into place as one unit.

        Args:
          moves: `(file in the work folder, destination path in the output
            folder)` pairs, in the order to rename them (the report that
            vouches for the others last).
        """
        names = []
        for src, dst in moves:
            if os.path.dirname(os.path.abspath(dst)) != os.path.abspath(self.folder):
                raise ValueError(f"{dst!r} is not in {self.folder!r}")
            names.append([os.path.basename(src), os.path.basename(dst)])
        journal = json.dumps({"pid": os.getpid(), "moves": names}).encode()
        write_new_file(self.file(JOURNAL + ".new"), journal)
        os.replace(self.file(JOURNAL + ".new"), self.file(JOURNAL))
        fsync_folder(self.path)
        # From here on the journal completes the renames if this process dies.
        self._keep = True
        _apply_journal(self.path)
        self.committed = True
        self._keep = False

    def remove(self):
        """Removes the work folder, unless a commit was cut short by an error.

        A commit that raised between its renames leaves the folder and its
        journal, so the next export to this folder finishes the renames.
        """
        if self._keep:
            logging.error("Could not finish renaming the files of %s; the next export to "
                          "this folder will finish it.", self.path)
            return
        shutil.rmtree(self.path, ignore_errors=True)


def _apply_journal(work_path):
    """Renames what the journal of a work folder lists (a no-op for done renames)."""
    with open(os.path.join(work_path, JOURNAL), encoding="utf-8") as f:
        moves = json.load(f)["moves"]
    folder = os.path.dirname(work_path)
    for src, dst in moves:
        for name in (src, dst):
            if os.path.basename(name) != name or name in ("", ".", ".."):
                raise ValueError(f"Bad name {name!r} in {work_path!r}/{JOURNAL}")
        source = os.path.join(work_path, src)
        if os.path.lexists(source):
            os.replace(source, os.path.join(folder, dst))
    fsync_folder(folder)


def _remove_stale(entry):
    """Removes one stale work folder or temporary file (after its journal)."""
    if entry.is_dir(follow_symlinks=False):
        if os.path.exists(os.path.join(entry.path, JOURNAL)):
            try:
                _apply_journal(entry.path)
                logging.info("Finished the interrupted export in %s", entry.path)
            except (OSError, ValueError, KeyError, TypeError) as e:
                logging.warning("Could not finish the interrupted export in %s: %s",
                                entry.path, e)
                return
        shutil.rmtree(entry.path, ignore_errors=True)
    else:
        remove_quietly(entry.path)
    logging.info("Removed %s left by an export that was killed", entry.path)


def clean_stale(folder, held_key=None):
    """Removes what killed exports left in `folder`.

    Work folders and temporary files whose PID is dead are removed (an
    interrupted commit is finished first, under the output's lock). Lock
    files are removed when nobody holds them. Anything of a live process is
    left alone.

    Args:
      folder: The output folder.
      held_key: Key of the lock the caller already holds.
    """
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = _TEMP_RE.match(entry.name)
        if match:
            if pid_alive(int(match["pid"])):
                continue
            key = match["key"]
            if key == held_key:
                _remove_stale(entry)
                continue
            lock = OutputLock(folder, key, entry.path)
            if lock.try_acquire():
                try:
                    _remove_stale(entry)
                finally:
                    lock.release()
            continue
        match = _LOCK_RE.match(entry.name)
        if match and match["key"] != held_key:
            lock = OutputLock(folder, match["key"], entry.path)
            if lock.try_acquire():
                lock.release()

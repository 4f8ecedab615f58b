"""Atomic file writing.

Every file tflite_export produces is first written to a temporary file in the
destination folder and then moved into place with `os.replace`, so a reader
never sees a half-written `.tflite` or report and a crash leaves no partial
file under the final name.
"""

import os
import tempfile


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
    path = os.path.abspath(os.fspath(path))
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


def temp_path_beside(path):
    """Creates an empty temporary file in the folder of `path`.

    The temporary file lives in the same folder so that the final
    `os.replace` is a rename on one file system, which is atomic.

    Args:
      path: The final destination.

    Returns:
      The path of the new temporary file.
    """
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    return tmp


def atomic_write_bytes(path, data):
    """Writes `data` to `path` atomically.

    Args:
      path: Destination file; its folder must exist.
      data: The bytes to write.
    """
    tmp = temp_path_beside(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise


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

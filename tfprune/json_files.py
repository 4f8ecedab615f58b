"""Writing JSON files whole: a reader sees the old file or the new one, never a part."""

import json
import os


def save_json(path, config, indent=2):
    """Writes `config` as JSON to `path`, replacing an existing file atomically.

    The text goes to a temporary file beside `path` first, which replaces
    `path` only when complete; if writing fails (e.g. a value JSON cannot
    hold), the temporary file is removed and `path` is left as it was.
    """
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=indent, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise

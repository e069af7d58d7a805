"""What the benchmark modules share: files written whole (through a temporary file and a rename), and JSON
files read and written."""

import json
import os


def atomic_write(path: str, write) -> None:
    """Write through a temporary file beside path, then rename it over path: readers (and a sweep killed at
    any moment) never see half a file. `write(tmp_path)` writes the file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, obj) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def read_json(path: str) -> dict | None:
    """The JSON object in path, or None when it is missing or not (yet) valid JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

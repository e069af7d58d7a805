"""What the benchmark scripts share."""

import json
import os


def write_json_atomic(path: str, obj: dict) -> None:
    """Write obj as JSON through a temporary file renamed over path, so readers never see half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)

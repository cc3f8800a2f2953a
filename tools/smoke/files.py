"""Writing the run's files so that a kill at any moment leaves them whole, and quoting logs."""

from __future__ import annotations

import json
from pathlib import Path


def tail(text: str, lines: int = 15) -> str:
    """The last `lines` lines of `text`, stripped (for problems and log excerpts)."""
    return "\n".join((text or "").strip().splitlines()[-lines:])


def write_json(path: Path, data) -> None:
    """Written to a temporary name and renamed: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)

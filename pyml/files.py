"""Files pyml writes beside the database (reports, exports, dbt models, prediction files)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Write `path` atomically: the block writes the temporary file this yields (hidden, in
    the same folder), which replaces `path` when the block ends without an error and is
    removed in every case, so a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()

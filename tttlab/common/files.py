"""Files every layer writes: atomically (never a half-written file for a reader or after a crash) and
as JSON-ready plain Python."""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path


def atomic_write(path, write) -> Path:
    """Call ``write(handle)`` on a temporary binary file beside ``path``, then rename it over
    ``path`` (``os.replace`` is atomic); the temporary file is removed if ``write`` fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path, text: str) -> Path:
    """``atomic_write`` of UTF-8 text."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def jsonable(value, digits: int | None = None):
    """Plain Python copies of numpy scalars and arrays, pandas tables, paths, dataclasses and nested
    containers; non-finite floats become None; with ``digits``, floats are rounded."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): jsonable(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, digits) for v in value]
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a DataFrame
        return jsonable(value.to_dict(orient="list"), digits)
    if isinstance(value, np.ndarray) or hasattr(value, "tolist") and hasattr(value, "index"):
        return jsonable(value.tolist(), digits)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return round(value, digits) if digits is not None else value
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return jsonable(asdict(value), digits)
    return value

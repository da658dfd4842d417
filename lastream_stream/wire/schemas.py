"""JSON Schema of every wire message, exported into ``schemas/`` for non-Python producers."""

from __future__ import annotations

import json
from pathlib import Path

from lastream_stream.wire.contracts import WIRE_MODELS

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def render() -> dict[str, str]:
    """File name -> JSON text, as exported."""
    return {
        f"{name}.schema.json": json.dumps(model.model_json_schema(mode="serialization"), indent=2, sort_keys=True)
        + "\n"
        for name, model in WIRE_MODELS.items()
    }


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, text in render().items():
        path = directory / filename
        path.write_text(text)
        written.append(path)
    return written

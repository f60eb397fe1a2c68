"""Load meshctl.toml into a MeshConfig, with file:line:key in every error.

The standard library's `tomllib` reads it and names a syntax error's line in its message;
for schema errors we find the key's line by scanning the text for table headers (`[rollout]`,
`[[nodes]]`) and `key = value` lines.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from pydantic import ValidationError

from meshctl.errors import ConfigError
from meshctl.model.config import ConfigFile, MeshConfig
from meshctl.source.tree import CONFIG_FILE
from meshctl.source.validate import all_aliases, describe, pick, real_path
from meshctl.source.yamlines import FieldPath, format_path

_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(#.*)?$")
_ARRAY = re.compile(r"^\s*\[\[\s*([A-Za-z0-9_.-]+)\s*\]\]\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("?)([A-Za-z0-9_-]+)\1\s*=""")
_AT = re.compile(r"\s*\(at line (\d+), column \d+\)$|\s*\(at end of document\)$")


def toml_error(err: tomllib.TOMLDecodeError, text: str) -> tuple[int | None, str]:
    """(line, message) of a syntax error: tomllib puts "(at line N, column M)" in its message."""
    message = str(err)
    m = _AT.search(message)
    if m is None:
        return None, message
    line = int(m.group(1)) if m.group(1) else max(1, len(text.splitlines()))
    return line, message[: m.start()]


def toml_lines(text: str) -> dict[FieldPath, int]:
    """(table, [index,] key) -> line for the simple TOML meshctl.toml uses."""
    lines: dict[FieldPath, int] = {}
    counts: dict[str, int] = {}
    current: FieldPath = ()
    for number, raw in enumerate(text.splitlines(), start=1):
        if m := _ARRAY.match(raw):
            name = m.group(1)
            index = counts.get(name, 0)
            counts[name] = index + 1
            current = (*name.split("."), index)
            lines.setdefault(current[:-1], number)
            lines[current] = number
        elif m := _TABLE.match(raw):
            current = tuple(m.group(1).split("."))
            lines[current] = number
        elif m := _KEY.match(raw):
            lines.setdefault((*current, m.group(2)), number)
    return lines


def parse_config(text: str, root: Path, file: str = CONFIG_FILE) -> MeshConfig:
    """The MeshConfig of a meshctl.toml text; paths resolve against `root`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        line, message = toml_error(err, text)
        raise ConfigError(file, line, "", f"invalid TOML: {message}") from None
    try:
        raw = ConfigFile.model_validate(data)
    except ValidationError as err:
        first = pick(err)
        path = real_path(data, first["loc"])
        message = describe(first, all_aliases())
        raise ConfigError(file, _line(text, path), format_path(path), message) from None
    for key, message in raw.reference_errors():
        raise ConfigError(file, _line(text, key), format_path(key), message)
    return MeshConfig.from_file(raw, root)


def _line(text: str, path: FieldPath) -> int | None:
    lines = toml_lines(text)
    return next((lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in lines), None)

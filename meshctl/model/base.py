"""The base of every desired-state model: frozen, strict about unknown fields, camelCase aliases.

Field names are the snake_case of the YAML keys and each alias is the YAML key, so code reads
`rule.to_ports` while users write `toPorts`, and `model_dump(by_alias=True)` gives YAML back.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class Model(BaseModel):
    """Frozen; unknown fields are errors; accepts the YAML key or the Python name."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        alias_generator=to_camel,
    )


class SourceRef(Model):
    """Where a document starts in the desired repo: plans and traces point users back here."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


NO_SOURCE = SourceRef(file="", line=0)


def source_field() -> Any:
    """The `.source` field every document carries; set by the loader, never read from YAML."""
    return Field(default=NO_SOURCE, exclude=True, repr=False)


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def check_dns_label(value: str) -> str:
    """RFC 1123 label (namespaces, node names): lowercase alphanumerics and '-', at most 63."""
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use lowercase letters, digits and '-', "
            "start and end with a letter or digit, at most 63 characters"
        )
    return value


def check_dns_subdomain(value: str) -> str:
    """RFC 1123 subdomain (object names): labels joined by '.', at most 253."""
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use lowercase letters, digits, '-' and '.', "
            "start and end with a letter or digit, at most 253 characters"
        )
    return value

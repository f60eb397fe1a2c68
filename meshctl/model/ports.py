"""Port numbers, named ports and ranges as both policy languages write them.

Kubernetes: `port` is a number or an IANA service name, `endPort` needs a number. Cilium: `port`
is a string holding a number or a name ("80", "http"); "0" or omitted means every port. We
store numbers as int and names as str, so `isinstance(port, str)` means "named port".
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def check_port_name(name: str) -> str:
    """IANA_SVC_NAME: 1-15 lowercase letters, digits and '-', with a letter, no '--'."""
    if (
        len(name) > 15
        or not _SVC_NAME.match(name)
        or "--" in name
        or not any(c.isalpha() for c in name)
    ):
        raise ValueError(
            f"{name!r} is not a valid port name: 1-15 lowercase letters, digits and '-', "
            "with at least one letter"
        )
    return name


def check_port_number(value: int, *, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise ValueError(f"{value} is not a valid port (expected {low}..65535)")
    return value


def parse_k8s_port(value: Any) -> int | str | None:
    """NetworkPolicyPort.port: an int 1..65535 or a named port (a quoted number is an error)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a port")
    if isinstance(value, int):
        return check_port_number(value)
    if isinstance(value, str):
        if value.isdigit():
            raise ValueError(f"{value!r} is quoted, so Kubernetes reads it as a port name: write {value}")
        return check_port_name(value)
    raise ValueError(f"{value!r} is not a port number or name")


def parse_cilium_port(value: Any) -> int | str:
    """PortProtocol.port: "80", 80 or a name; "0", "" or omitted = every port (returned as 0)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a port")
    if isinstance(value, int):
        return check_port_number(value, allow_zero=True)
    if isinstance(value, str):
        if value == "":
            return 0
        if value.isdigit():
            return check_port_number(int(value), allow_zero=True)
        return check_port_name(value)
    raise ValueError(f"{value!r} is not a port number or name")


def parse_end_port(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a port number (endPort takes a number)")
    return check_port_number(value)


def check_range(port: int | str | None, end_port: int | None) -> None:
    """endPort needs a numeric, non-zero start and must not be below it."""
    if end_port is None:
        return
    if isinstance(port, str):
        raise ValueError(f"endPort {end_port} cannot be combined with the named port {port!r}")
    if not port:
        raise ValueError(f"endPort {end_port} needs a port to start the range")
    if end_port < port:
        raise ValueError(f"endPort {end_port} is below port {port}")


K8sPort = Annotated[int | str | None, BeforeValidator(parse_k8s_port)]
CiliumPort = Annotated[int | str, BeforeValidator(parse_cilium_port)]
EndPort = Annotated[int | None, BeforeValidator(parse_end_port)]

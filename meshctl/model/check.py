"""meshctl.io/v1alpha1 ConnectivityCheck: a connection apply makes to verify a node.

`from` is a pod ("namespace/pod"); `to` is a pod or an IPv4 address; `expect` says whether the
connection must succeed or be dropped under the desired policy.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, ip_address
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from meshctl.model.base import Model, SourceRef, source_field
from meshctl.model.meta import ObjectMeta
from meshctl.model.ports import check_port_number

_POD_REF = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def check_pod_ref(value: str) -> str:
    if not _POD_REF.match(value):
        raise ValueError(f"{value!r} is not a pod reference: write namespace/pod")
    return value


def check_target(value: Any) -> str:
    """A pod reference, or an IPv4 address kept as its string form."""
    if isinstance(value, str) and "/" not in value:
        try:
            addr = ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is neither namespace/pod nor an IPv4 address") from None
        if not isinstance(addr, IPv4Address):
            raise ValueError(f"{value!r} is IPv6: checks are IPv4-only")
        return str(addr)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is neither namespace/pod nor an IPv4 address")
    return check_pod_ref(value)


PodRef = Annotated[str, AfterValidator(check_pod_ref)]
Target = Annotated[str, BeforeValidator(check_target)]
CheckPort = Annotated[int, AfterValidator(check_port_number)]
CheckProtocol = Literal["TCP", "UDP"]
Expect = Literal["allowed", "denied"]


class ConnectivityCheck(Model):
    name: str
    from_: PodRef = Field(alias="from")
    to: Target
    port: CheckPort
    protocol: CheckProtocol = "TCP"
    expect: Expect
    source: SourceRef = source_field()

    @property
    def to_pod(self) -> bool:
        return "/" in self.to


class ConnectivityCheckSpec(Model):
    from_: PodRef = Field(alias="from")
    to: Target
    port: CheckPort
    protocol: CheckProtocol = "TCP"
    expect: Expect


class ConnectivityCheckDocument(Model):
    api_version: Literal["meshctl.io/v1alpha1"]
    kind: Literal["ConnectivityCheck"]
    metadata: ObjectMeta
    spec: ConnectivityCheckSpec

    def to_check(self, source: SourceRef) -> ConnectivityCheck:
        s = self.spec
        return ConnectivityCheck(
            name=self.metadata.name, from_=s.from_, to=s.to, port=s.port, protocol=s.protocol,
            expect=s.expect, source=source,
        )

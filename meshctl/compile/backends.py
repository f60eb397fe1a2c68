"""Which pods back a service port, and on which port: Kubernetes' EndpointSlice rules.

A pod backs a service when it is in the service's namespace, has an IP, and matches the
selector (plain key/value equality; an empty selector `{}` selects nothing, like the
EndpointSlice controller, and a service without a selector has no managed backends). A numeric
targetPort is used as is; a named one resolves per pod to the containerPort of that name and
protocol, and a pod without it is not a backend of that port.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from meshctl.model.inventory import Pod
from meshctl.model.service import Service, ServicePort


@dataclass(frozen=True)
class Backend:
    pod: Pod
    port: int
    protocol: str

    @property
    def key(self) -> str:
        """ "ip:port/proto": the name Maglev hashes, the same on every node."""
        return f"{self.pod.pod_ip}:{self.port}/{self.protocol}"


def selects(service: Service, pod: Pod) -> bool:
    if not service.selector or pod.namespace != service.namespace:
        return False
    return all(pod.labels.get(k) == v for k, v in service.selector.items())


def target_port(port: ServicePort, pod: Pod) -> int | None:
    """The pod port a service port sends to, or None when a named targetPort is missing."""
    target = port.target
    if isinstance(target, int):
        return target
    for cp in pod.ports:
        if cp.name == target and cp.protocol == port.protocol:
            return cp.container_port
    return None


def resolve_backends(
    service: Service, pods: Iterable[Pod], port: ServicePort | None = None
) -> tuple[Backend, ...]:
    """Backends of `port` (default: the service's first port), sorted by IP for stable output."""
    if service.headless or not service.ports:
        return ()
    sp = port or service.ports[0]
    out = []
    for pod in pods:
        if pod.pod_ip is None or not selects(service, pod):
            continue
        number = target_port(sp, pod)
        if number is not None:
            out.append(Backend(pod=pod, port=number, protocol=sp.protocol))
    return tuple(sorted(out, key=lambda b: (int(b.pod.pod_ip or 0), b.port)))

"""The agent API over TCP with mutual TLS, on loopback with real certificates (meshctl.lab.pki):
the right agent answers; a wrong CA, an expired certificate, another node's certificate, an
unreachable port, a client without (or with a foreign) certificate and TLS against a plain agent
each fail with their own one-line reason."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meshctl.agentapi.client import AgentClient
from meshctl.agentapi.protocol import AgentApiError
from meshctl.agentapi.server import serve_tcp
from meshctl.agentapi.service import NodeService
from meshctl.agentapi.tls import TcpEndpoint, TlsConfigError, TlsFiles
from meshctl.lab.pki import Authority
from meshctl.nodestate import NodeState
from meshctl.state.atomic import atomic_write

NODE = "node-1"
HOST = "127.0.0.1"


class StillNode:
    """A NodeDriver whose node never changes (the transport is what is tested here)."""

    def observe(self, node: str) -> NodeState:
        return NodeState(NODE)

    def reconcile(self, node: str, current: NodeState, target: NodeState) -> None:
        raise AssertionError("not called")

    def drop_counts(self, node: str) -> dict[tuple[int, int, int], int]:
        return {}


class Pki:
    """Two CAs (ours and a foreign one) and files issued on demand under `root`."""

    def __init__(self, root: Path) -> None:
        self.root, self.ca, self.other = root, Authority.create("test CA"), Authority.create("other CA")
        self.ca_file, self.other_file = root / "ca.crt", root / "other.crt"
        self.ca.write(self.ca_file, root / "ca.key")
        self.other.write(self.other_file, root / "other.key")

    def files(self, name: str, *, server: bool, by: Authority | None = None, ca: Path | None = None,
              valid: tuple[dt.datetime, dt.datetime] | None = None) -> TlsFiles:
        addresses = (HOST,) if server else ()
        cert, key = (by or self.ca).issue(name, server=server, addresses=addresses, valid=valid)
        tag = f"{name}-{'s' if server else 'c'}-{id(by)}-{id(valid)}"
        atomic_write(self.root / f"{tag}.crt", cert)
        atomic_write(self.root / f"{tag}.key", key, 0o600)
        return TlsFiles(ca or self.ca_file, self.root / f"{tag}.crt", self.root / f"{tag}.key")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Callable[[ssl.SSLContext | None], int]]:
    """Start an agent on loopback with the given server context (None: plain TCP); its port."""
    stops: list[tuple[threading.Event, threading.Thread]] = []

    def start(tls: ssl.SSLContext | None) -> int:
        port, stop, ready = free_port(), threading.Event(), threading.Event()
        service = NodeService(NODE, StillNode(), tmp_path / f"journal-{port}")
        thread = threading.Thread(target=serve_tcp, args=(service, (HOST, port), tls, stop),
                                  kwargs={"ready": ready}, daemon=True)
        thread.start()
        assert ready.wait(10)
        stops.append((stop, thread))
        return port

    yield start
    for stop, thread in stops:
        stop.set()
        thread.join(10)


def client(port: int, files: TlsFiles | None, node: str = NODE) -> AgentClient:
    tls = files.client_context() if files is not None else None
    return AgentClient(node, TcpEndpoint(HOST, port, tls, files.ca if files else None), timeout_s=5)


def test_mutual_tls_reaches_the_named_node(pki: Pki, agent: Callable[..., int]) -> None:
    port = agent(pki.files(NODE, server=True).server_context())
    assert client(port, pki.files("meshctl", server=False)).observe() == NodeState(NODE)


def failure(port: int, files: TlsFiles | None, node: str = NODE) -> str:
    with pytest.raises(AgentApiError) as err:
        client(port, files, node).observe()
    text = str(err.value)
    assert text.startswith(f"agent of node {node}: ") and "\n" not in text and "Traceback" not in text
    return text


def test_an_agent_signed_by_another_ca_is_refused(pki: Pki, agent: Callable[..., int]) -> None:
    port = agent(pki.files(NODE, server=True, by=pki.other, ca=pki.other_file).server_context())
    text = failure(port, pki.files("meshctl", server=False))
    assert f"presents a certificate not signed by the CA {pki.ca_file}" in text


def test_an_expired_agent_certificate_is_refused(pki: Pki, agent: Callable[..., int]) -> None:
    now = dt.datetime.now(dt.UTC)
    expired = pki.files(NODE, server=True, valid=(now - dt.timedelta(days=30), now - dt.timedelta(days=1)))
    port = agent(expired.server_context())
    assert "presents an expired certificate" in failure(port, pki.files("meshctl", server=False))


def test_another_nodes_agent_is_refused(pki: Pki, agent: Callable[..., int]) -> None:
    port = agent(pki.files("node-2", server=True).server_context())
    text = failure(port, pki.files("meshctl", server=False))
    assert "presents a certificate that does not name node node-1" in text


def test_an_unreachable_agent_is_one_line(pki: Pki) -> None:
    text = failure(free_port(), pki.files("meshctl", server=False))
    assert "cannot reach 127.0.0.1:" in text and "connection refused" in text


def test_the_agent_refuses_clients_without_a_certificate_of_its_ca(pki: Pki, agent: Callable[..., int]
                                                                   ) -> None:
    port = agent(pki.files(NODE, server=True).server_context())
    foreign = pki.files("meshctl", server=False, by=pki.other)  # trusts our CA, signed by another
    assert "refused our client certificate" in failure(port, foreign)
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no client certificate at all
    bare.load_verify_locations(cafile=str(pki.ca_file))
    with pytest.raises(AgentApiError, match="refused our client certificate"):
        AgentClient(NODE, TcpEndpoint(HOST, port, bare), timeout_s=5).observe()
    with pytest.raises(AgentApiError):  # plain HTTP to a TLS agent gets nothing
        client(port, None).observe()


def test_tls_against_a_plain_agent_says_so(pki: Pki, agent: Callable[..., int]) -> None:
    port = agent(None)
    assert "does not speak TLS" in failure(port, pki.files("meshctl", server=False))
    assert client(port, None).observe() == NodeState(NODE)  # plain, when both sides ask for it


def test_unusable_files_are_a_clear_error(pki: Pki, tmp_path: Path) -> None:
    files = pki.files("meshctl", server=False)
    with pytest.raises(TlsConfigError, match=r"client: CA .*missing\.crt"):
        TlsFiles(tmp_path / "missing.crt", files.cert, files.key).client_context()
    with pytest.raises(TlsConfigError, match="client: certificate"):
        TlsFiles(files.ca, files.key, files.key).client_context()


def test_environment_overrides_the_configured_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MESHCTL_AGENT_KEY", str(tmp_path / "secret.key"))
    files = TlsFiles.from_env(Path("ca.crt"), Path("c.crt"), Path("c.key"))
    assert files == TlsFiles(Path("ca.crt"), Path("c.crt"), tmp_path / "secret.key")
    assert TlsFiles.from_env(Path("ca.crt"), None, Path("c.key")) is None

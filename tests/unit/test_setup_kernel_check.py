"""scripts/check-kernel.sh, which setup.sh runs first: it names every missing kernel feature."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check-kernel.sh"
GOOD = "CONFIG_BPF_SYSCALL=y\nCONFIG_DEBUG_INFO_BTF=y\nCONFIG_NET_XGRESS=y\n"


def _run(tmp_path: Path, release: str, config: str | None, btf: bool = True,
         ) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.gz"
    if config is not None:
        path.write_bytes(gzip.compress(config.encode()))
    btf_file = tmp_path / "vmlinux"
    if btf:
        btf_file.write_bytes(b"\x9f\xeb")
    env = {"PATH": "/usr/bin:/bin", "KERNEL_RELEASE": release, "KERNEL_CONFIG": str(path),
           "KERNEL_BTF": str(btf_file)}
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)


def test_a_capable_kernel_passes_quietly(tmp_path: Path) -> None:
    proc = _run(tmp_path, "6.6.0-1-amd64", GOOD)
    assert (proc.returncode, proc.stderr) == (0, "")


def test_an_old_kernel_without_btf_and_tcx_is_told_everything_missing(tmp_path: Path) -> None:
    old = "CONFIG_BPF_SYSCALL=y\n# CONFIG_NET_XGRESS is not set\n"
    proc = _run(tmp_path, "6.1.0-18-amd64", old, btf=False)
    assert proc.returncode == 1
    assert "kernel 6.6 or newer for tcx attachment (this is 6.1.0-18-amd64)" in proc.stderr
    assert "CONFIG_NET_XGRESS (tcx hooks)" in proc.stderr
    assert "(the kernel's BTF; built with CONFIG_DEBUG_INFO_BTF=y)" in proc.stderr
    assert "CONFIG_BPF_SYSCALL" not in proc.stderr


def test_no_bpf_syscall_is_missing(tmp_path: Path) -> None:
    proc = _run(tmp_path, "6.12.9", "# CONFIG_BPF_SYSCALL is not set\nCONFIG_NET_XGRESS=y\n")
    assert proc.returncode == 1 and "CONFIG_BPF_SYSCALL (the bpf() syscall)" in proc.stderr


def test_without_a_kernel_config_it_says_what_it_could_not_check(tmp_path: Path) -> None:
    proc = _run(tmp_path, "6.12.9", None)
    assert proc.returncode == 0
    assert "no readable kernel config" in proc.stderr and "? CONFIG_NET_XGRESS (tcx hooks)" in proc.stderr


def test_setup_checks_the_kernel_before_anything_else() -> None:
    lines = [line for line in (ROOT / "scripts" / "setup.sh").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines[:3] == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', "bash scripts/check-kernel.sh"]

"""Alignment check (Cilium's alignchecker): every ctypes mirror matches the C struct in the BTF.

Reads the BTF of bpf/build/datapath.o (`bpftool -j btf dump file`) and compares, struct by
struct, the size, the member names and every member's offset and size.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from bd_helpers import REPO

from meshctl.dataplane.structs import MIRRORS, c_field_name

pytestmark = pytest.mark.privileged

OBJECT = REPO / "bpf" / "build" / "datapath.o"


@pytest.fixture(scope="module")
def btf_types() -> dict[int, dict[str, Any]]:
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool is not installed")
    if shutil.which("clang") is not None:
        subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True, capture_output=True)
    elif not Path(OBJECT).exists():
        pytest.skip("no datapath object and no clang to build it")
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(OBJECT)], check=True,
                         capture_output=True, text=True).stdout
    return {t["id"]: t for t in json.loads(out)["types"]}


def type_size(types: dict[int, dict[str, Any]], type_id: int) -> int:
    """Byte size of a BTF type, following typedefs, qualifiers and arrays."""
    t = types[type_id]
    kind = t["kind"]
    if kind in ("TYPEDEF", "VOLATILE", "CONST", "RESTRICT", "TYPE_TAG"):
        return type_size(types, t["type_id"])
    if kind == "ARRAY":
        return t["nr_elems"] * type_size(types, t["type_id"])
    return int(t["size"])


def find_struct(types: dict[int, dict[str, Any]], name: str) -> dict[str, Any]:
    found = [t for t in types.values() if t["kind"] == "STRUCT" and t["name"] == name]
    assert found, f"struct {name} is not in the BTF of {OBJECT} (only a forward declaration?)"
    return found[0]


@pytest.mark.parametrize("c_name", sorted(MIRRORS))
def test_mirror_matches_btf(btf_types: dict[int, dict[str, Any]], c_name: str) -> None:
    mirror = MIRRORS[c_name]
    st = find_struct(btf_types, c_name)
    assert ctypes.sizeof(mirror) == st["size"], f"struct {c_name}: size"
    py_fields = [(c_field_name(n), getattr(mirror, n)) for n, *_ in mirror._fields_]
    assert [n for n, _ in py_fields] == [m["name"] for m in st["members"]], f"struct {c_name}: members"
    for (name, desc), member in zip(py_fields, st["members"], strict=True):
        assert member["bits_offset"] % 8 == 0, f"{c_name}.{name} is a bitfield"
        assert desc.offset == member["bits_offset"] // 8, f"struct {c_name}.{name}: offset"
        assert desc.size == type_size(btf_types, member["type_id"]), f"struct {c_name}.{name}: size"


def test_mirrors_have_no_implicit_padding() -> None:
    """Keys compare byte for byte: every byte of every struct belongs to a named field."""
    for c_name, mirror in MIRRORS.items():
        covered = sum(getattr(mirror, n).size for n, *_ in mirror._fields_)
        assert covered == ctypes.sizeof(mirror), f"struct {c_name} has implicit padding"


def test_byte_order_fields_are_the_be_fields_of_common_h() -> None:
    """Fields declared __be16/__be32 in common.h end in _be in the mirror, and only those."""
    text = (REPO / "bpf" / "lib" / "common.h").read_text()
    for c_name, mirror in MIRRORS.items():
        body = text.split(f"struct {c_name} {{", 1)[1].split("};", 1)[0]
        be = {line.split()[1].rstrip(";") for line in body.splitlines() if line.strip().startswith("__be")}
        ours = {c_field_name(n) for n, *_ in mirror._fields_ if n.endswith("_be")}
        assert ours == be, f"struct {c_name}: big-endian fields"

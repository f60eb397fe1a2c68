"""ctypes binding to libbpf.so.1 (1.1.2): the only place meshctl calls the bpf() syscall.

Every libbpf function used is declared with argtypes/restype. libbpf returns -errno from int
calls and NULL + errno from pointer calls; both become a DataplaneError naming the operation and
the object. The verifier log goes through `libbpf_set_print` into a buffer that is attached to
the error when a load fails.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
import threading
from collections.abc import Iterator, Sequence
from ctypes import (
    POINTER,
    byref,
    c_char,
    c_char_p,
    c_int,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
    create_string_buffer,
)
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from meshctl.errors import DataplaneError

ENOTSUPP = 524  # kernel-internal "operation not supported" (no name in errno)

# enum bpf_map_type (subset we use or recognise)
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
BPF_MAP_TYPE_LPM_TRIE = 11
BPF_MAP_TYPE_ARRAY_OF_MAPS = 12
BPF_MAP_TYPE_HASH_OF_MAPS = 13
BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE = 21
BPF_MAP_TYPE_RINGBUF = 27
PERCPU_MAP_TYPES = frozenset(
    {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH,
     BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE}
)
MAP_OF_MAPS_TYPES = frozenset({BPF_MAP_TYPE_ARRAY_OF_MAPS, BPF_MAP_TYPE_HASH_OF_MAPS})

# map flags
BPF_F_NO_PREALLOC = 1 << 0
# update flags
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

# enum bpf_attach_type: the tcx values postdate the 1.1.2 uapi header (kernel 6.6+).
BPF_TCX_INGRESS = 46
BPF_TCX_EGRESS = 47
BPF_LINK_TYPE_TCX = 11


class _MapCreateOpts(ctypes.Structure):
    """struct bpf_map_create_opts (libbpf 1.1.2)."""

    _fields_ = [
        ("sz", c_size_t),
        ("btf_fd", c_uint32),
        ("btf_key_type_id", c_uint32),
        ("btf_value_type_id", c_uint32),
        ("btf_vmlinux_value_type_id", c_uint32),
        ("inner_map_fd", c_uint32),
        ("map_flags", c_uint32),
        ("map_extra", c_uint64),
        ("numa_node", c_uint32),
        ("map_ifindex", c_uint32),
    ]


class _BatchOpts(ctypes.Structure):
    """struct bpf_map_batch_opts."""

    _fields_ = [("sz", c_size_t), ("elem_flags", c_uint64), ("flags", c_uint64)]


class _TestRunOpts(ctypes.Structure):
    """struct bpf_test_run_opts."""

    _fields_ = [
        ("sz", c_size_t),
        ("data_in", c_void_p),
        ("data_out", c_void_p),
        ("data_size_in", c_uint32),
        ("data_size_out", c_uint32),
        ("ctx_in", c_void_p),
        ("ctx_out", c_void_p),
        ("ctx_size_in", c_uint32),
        ("ctx_size_out", c_uint32),
        ("retval", c_uint32),
        ("repeat", c_int),
        ("duration", c_uint32),
        ("flags", c_uint32),
        ("cpu", c_uint32),
        ("batch_size", c_uint32),
    ]


class _MapInfo(ctypes.Structure):
    """struct bpf_map_info (uapi)."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("key_size", c_uint32),
        ("value_size", c_uint32),
        ("max_entries", c_uint32),
        ("map_flags", c_uint32),
        ("name", c_char * 16),
        ("ifindex", c_uint32),
        ("btf_vmlinux_value_type_id", c_uint32),
        ("netns_dev", c_uint64),
        ("netns_ino", c_uint64),
        ("btf_id", c_uint32),
        ("btf_key_type_id", c_uint32),
        ("btf_value_type_id", c_uint32),
        ("_pad", c_uint32),
        ("map_extra", c_uint64),
    ]


class _ProgInfo(ctypes.Structure):
    """struct bpf_prog_info (uapi), up to `name`; the kernel copies only what we ask for."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("tag", c_uint8 * 8),
        ("jited_prog_len", c_uint32),
        ("xlated_prog_len", c_uint32),
        ("jited_prog_insns", c_uint64),
        ("xlated_prog_insns", c_uint64),
        ("load_time", c_uint64),
        ("created_by_uid", c_uint32),
        ("nr_map_ids", c_uint32),
        ("map_ids", c_uint64),
        ("name", c_char * 16),
    ]


class _LinkInfo(ctypes.Structure):
    """struct bpf_link_info (uapi): header plus the tcx member of the union."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("prog_id", c_uint32),
        ("_pad", c_uint32),
        ("ifindex", c_uint32),  # tcx.ifindex
        ("attach_type", c_uint32),  # tcx.attach_type
        ("_rest", c_uint64 * 4),
    ]


PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
RINGBUF_SAMPLE_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)


def _declare(lib: ctypes.CDLL) -> None:
    """argtypes/restype for every function we call (a wrong guess would corrupt the stack)."""
    p, i, u32 = c_void_p, c_int, c_uint32
    sigs: dict[str, tuple[list[object], object]] = {
        "libbpf_set_print": ([PRINT_FN], c_void_p),
        "libbpf_num_possible_cpus": ([], i),
        "bpf_object__open_file": ([c_char_p, p], p),
        "bpf_object__load": ([p], i),
        "bpf_object__close": ([p], None),
        "bpf_object__find_map_by_name": ([p, c_char_p], p),
        "bpf_object__find_program_by_name": ([p, c_char_p], p),
        "bpf_object__next_map": ([p, p], p),
        "bpf_object__next_program": ([p, p], p),
        "bpf_map__name": ([p], c_char_p),
        "bpf_map__fd": ([p], i),
        "bpf_map__reuse_fd": ([p, i], i),
        "bpf_map__key_size": ([p], u32),
        "bpf_map__value_size": ([p], u32),
        "bpf_program__name": ([p], c_char_p),
        "bpf_program__fd": ([p], i),
        "bpf_map_create": ([u32, c_char_p, u32, u32, u32, p], i),
        "bpf_map_lookup_elem": ([i, p, p], i),
        "bpf_map_update_elem": ([i, p, p, c_uint64], i),
        "bpf_map_delete_elem": ([i, p], i),
        "bpf_map_get_next_key": ([i, p, p], i),
        "bpf_map_lookup_batch": ([i, p, p, p, p, POINTER(u32), p], i),
        "bpf_map_update_batch": ([i, p, p, POINTER(u32), p], i),
        "bpf_map_delete_batch": ([i, p, POINTER(u32), p], i),
        "bpf_obj_pin": ([i, c_char_p], i),
        "bpf_obj_get": ([c_char_p], i),
        "bpf_obj_get_info_by_fd": ([i, p, POINTER(u32)], i),
        "bpf_map_get_fd_by_id": ([u32], i),
        "bpf_prog_get_fd_by_id": ([u32], i),
        "bpf_link_get_fd_by_id": ([u32], i),
        "bpf_link_create": ([i, i, u32, p], i),
        "bpf_link_detach": ([i], i),
        "bpf_link_update": ([i, i, p], i),
        "bpf_prog_test_run_opts": ([i, p], i),
        "bpf_prog_query": ([i, u32, u32, POINTER(u32), p, POINTER(u32)], i),
        "ring_buffer__new": ([i, RINGBUF_SAMPLE_FN, p, p], p),
        "ring_buffer__poll": ([p, i], i),
        "ring_buffer__consume": ([p], i),
        "ring_buffer__free": ([p], None),
        "ring_buffer__epoll_fd": ([p], i),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = res


lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
_declare(lib)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
_libc.vsnprintf.restype = c_int


# ---------------------------------------------------------------- verifier log capture

_log_lock = threading.Lock()
_log_lines: list[str] = []
LOG_LIMIT = 64 * 1024  # keep the tail: the verifier's last lines say why


LIBBPF_DEBUG = 2


def _print(level: int, fmt: bytes | None, args: int | None) -> int:
    if level >= LIBBPF_DEBUG:
        return 0  # warnings and info carry the verifier log; debug is ELF chatter
    buf = create_string_buffer(4096)
    n = _libc.vsnprintf(buf, len(buf), fmt, args)
    if n > 0:
        _log_lines.append(buf.value.decode(errors="replace"))
    return 0


_print_cb = PRINT_FN(_print)  # module global: must outlive every libbpf call
lib.libbpf_set_print(_print_cb)


def _take_log() -> str:
    text = "".join(_log_lines)
    _log_lines.clear()
    return text[-LOG_LIMIT:]


# ---------------------------------------------------------------- helpers


def _check(ret: int, op: str, obj: str) -> int:
    if ret < 0:
        raise DataplaneError(op, obj, -ret)
    return ret


def _check_ptr(ptr: int | None, op: str, obj: str) -> int:
    if not ptr:
        raise DataplaneError(op, obj, ctypes.get_errno() or errno_mod.EINVAL)
    return ptr


def num_possible_cpus() -> int:
    """Number of possible CPUs: per-CPU map values hold one slot per possible CPU."""
    return _check(lib.libbpf_num_possible_cpus(), "count", "possible cpus")


def _round8(n: int) -> int:
    return (n + 7) & ~7


def _close_fd(fd: int) -> None:
    if fd >= 0:
        os.close(fd)


# ---------------------------------------------------------------- maps


@dataclass(frozen=True)
class MapInfo:
    """What the kernel says about a map (bpf_obj_get_info_by_fd)."""

    id: int
    name: str
    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int


def map_info(fd: int, what: str = "map") -> MapInfo:
    info = _MapInfo()
    size = c_uint32(ctypes.sizeof(info))
    _check(lib.bpf_obj_get_info_by_fd(fd, byref(info), byref(size)), "get info of", what)
    return MapInfo(info.id, info.name.decode(), info.type, info.key_size, info.value_size,
                   info.max_entries, info.map_flags)


class Map:
    """A BPF map by fd; keys and values are bytes in the kernel's layout.

    Per-CPU values are `round_up(value_size, 8) * possible_cpus` bytes. Maps of maps take an
    inner map fd (4 bytes) on update and return an inner map id on lookup.
    """

    def __init__(self, fd: int, owned: bool, label: str | None = None) -> None:
        self.fd = fd
        self._owned = owned
        info = map_info(fd, label or f"map fd {fd}")
        self.id = info.id
        self.name = info.name
        self.map_type = info.map_type
        self.key_size = info.key_size
        self.value_size = info.value_size
        self.max_entries = info.max_entries
        self.flags = info.flags
        self.label = label or f"map {self.name or self.id}"
        self.percpu = self.map_type in PERCPU_MAP_TYPES
        self.ncpus = num_possible_cpus() if self.percpu else 1
        self.value_buf_size = _round8(self.value_size) * self.ncpus if self.percpu else self.value_size

    # -- construction
    @classmethod
    def from_pin(cls, path: str | Path) -> Map:
        fd = lib.bpf_obj_get(str(path).encode())
        _check(fd, "open pinned map", str(path))
        return cls(fd, owned=True, label=f"map {path}")

    @classmethod
    def from_id(cls, map_id: int) -> Map:
        fd = lib.bpf_map_get_fd_by_id(map_id)
        _check(fd, "open map id", str(map_id))
        return cls(fd, owned=True)

    @classmethod
    def create(cls, map_type: int, key_size: int, value_size: int, max_entries: int, flags: int = 0,
               name: str = "", inner_map_fd: int | None = None) -> Map:
        opts = _MapCreateOpts(sz=ctypes.sizeof(_MapCreateOpts), map_flags=flags)
        if inner_map_fd is not None:
            opts.inner_map_fd = inner_map_fd
        fd = lib.bpf_map_create(map_type, name.encode()[:15] or None, key_size, value_size,
                                max_entries, byref(opts))
        _check(fd, "create map", name or f"type {map_type}")
        return cls(fd, owned=True, label=f"map {name or 'anonymous'}")

    def close(self) -> None:
        if self._owned and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> Map:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pin(self, path: str | Path) -> None:
        _check(lib.bpf_obj_pin(self.fd, str(path).encode()), "pin", f"{self.label} at {path}")

    def info(self) -> MapInfo:
        return map_info(self.fd, self.label)

    # -- single entries
    def _key(self, key: bytes) -> bytes:
        if len(key) != self.key_size:
            raise ValueError(f"{self.label}: key is {len(key)} bytes, map wants {self.key_size}")
        return key

    def lookup(self, key: bytes) -> bytes | None:
        out = create_string_buffer(self.value_buf_size)
        ret = lib.bpf_map_lookup_elem(self.fd, self._key(key), out)
        if ret == -errno_mod.ENOENT:
            return None
        _check(ret, "lookup in", self.label)
        return out.raw

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        if len(value) != self.value_buf_size:
            raise ValueError(f"{self.label}: value is {len(value)} bytes, map wants {self.value_buf_size}")
        _check(lib.bpf_map_update_elem(self.fd, self._key(key), value, flags), "update", self.label)

    def delete(self, key: bytes) -> bool:
        ret = lib.bpf_map_delete_elem(self.fd, self._key(key))
        if ret == -errno_mod.ENOENT:
            return False
        _check(ret, "delete from", self.label)
        return True

    def keys(self) -> Iterator[bytes]:
        """Every key (BPF_MAP_GET_NEXT_KEY); a key deleted meanwhile restarts nothing."""
        cur: bytes | None = None
        nxt = create_string_buffer(self.key_size)
        while True:
            ret = lib.bpf_map_get_next_key(self.fd, cur, nxt)
            if ret == -errno_mod.ENOENT:
                return
            _check(ret, "iterate", self.label)
            cur = nxt.raw
            yield cur

    def __iter__(self) -> Iterator[bytes]:
        return self.keys()

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every (key, value): one batch dump where the map type supports it."""
        return self.lookup_batch()

    def _per_entry_items(self) -> list[tuple[bytes, bytes]]:
        out = []
        for k in list(self.keys()):
            v = self.lookup(k)
            if v is not None:
                out.append((k, v))
        return out

    # -- batches
    def lookup_batch(self, chunk: int = 4096) -> list[tuple[bytes, bytes]]:
        """Dump the map with BPF_MAP_LOOKUP_BATCH; per entry where the kernel has no batch op
        for the type (EINVAL/ENOTSUPP on the first call; LPM tries gained it in recent kernels)."""
        if self.map_type in MAP_OF_MAPS_TYPES:
            return self._per_entry_items()  # few entries; values are ids, keep it simple
        kb, vb = self.dump(chunk)
        ks, vs = self.key_size, self.value_buf_size
        return [(kb[i:i + ks], vb[j:j + vs]) for i, j in zip(range(0, len(kb), ks), range(0, len(vb), vs),
                                                              strict=True)]

    def dump(self, chunk: int = 4096) -> tuple[bytes, bytes]:
        """Every key and every value, each concatenated in one bytes (kernel order, one entry
        per key_size/value_buf_size bytes): the fast read for big maps, decoded in bulk."""
        if self.map_type in MAP_OF_MAPS_TYPES:
            items = self._per_entry_items()
            return b"".join(k for k, _ in items), b"".join(v for _, v in items)
        ks, vs = self.key_size, self.value_buf_size
        token_size = max(ks, 8)
        in_tok = create_string_buffer(token_size)
        out_tok = create_string_buffer(token_size)
        opts = _BatchOpts(sz=ctypes.sizeof(_BatchOpts))
        kparts: list[bytes] = []
        vparts: list[bytes] = []
        first = True
        n = min(chunk, max(self.max_entries, 1))
        keys = create_string_buffer(ks * n)
        vals = create_string_buffer(vs * n)
        while True:
            count = c_uint32(n)
            ret = lib.bpf_map_lookup_batch(self.fd, None if first else in_tok, out_tok, keys, vals,
                                           byref(count), byref(opts))
            if ret == -errno_mod.ENOSPC and count.value == 0:
                n *= 2  # one hash bucket holds more than n entries
                keys, vals = create_string_buffer(ks * n), create_string_buffer(vs * n)
                continue
            if ret < 0 and -ret in (errno_mod.EINVAL, errno_mod.EOPNOTSUPP, ENOTSUPP) and first:
                items = self._per_entry_items()
                return b"".join(k for k, _ in items), b"".join(v for _, v in items)
            if ret < 0 and ret != -errno_mod.ENOENT:
                _check(ret, "batch lookup in", self.label)
            got = count.value
            kparts.append(ctypes.string_at(keys, got * ks))
            vparts.append(ctypes.string_at(vals, got * vs))
            if ret == -errno_mod.ENOENT:
                return (kparts[0], vparts[0]) if len(kparts) == 1 else (b"".join(kparts), b"".join(vparts))
            ctypes.memmove(in_tok, out_tok, token_size)
            first = False

    def update_batch(self, keys: Sequence[bytes], values: Sequence[bytes], flags: int = BPF_ANY) -> None:
        """Write many entries in one syscall (per entry where the type has no batch update)."""
        if len(keys) != len(values):
            raise ValueError("update_batch: keys and values differ in length")
        if not keys:
            return
        kb, vb = b"".join(keys), b"".join(values)
        if len(kb) != self.key_size * len(keys) or len(vb) != self.value_buf_size * len(values):
            raise ValueError(f"{self.label}: batch keys/values have the wrong size")
        opts = _BatchOpts(sz=ctypes.sizeof(_BatchOpts), elem_flags=flags)
        count = c_uint32(len(keys))
        ret = lib.bpf_map_update_batch(self.fd, kb, vb, byref(count), byref(opts))
        if ret < 0 and -ret in (errno_mod.EINVAL, errno_mod.EOPNOTSUPP, ENOTSUPP) and count.value == 0:
            for k, v in zip(keys, values, strict=True):
                self.update(k, v, flags)
            return
        _check(ret, "batch update", self.label)

    def delete_batch(self, keys: Sequence[bytes]) -> None:
        """Delete many entries; missing keys are ignored (idempotent)."""
        if not keys:
            return
        kb = b"".join(keys)
        opts = _BatchOpts(sz=ctypes.sizeof(_BatchOpts))
        count = c_uint32(len(keys))
        ret = lib.bpf_map_delete_batch(self.fd, kb, byref(count), byref(opts))
        if ret == 0:
            return
        # ENOENT stops a batch at the first missing key; finish entry by entry.
        for k in keys[count.value:]:
            self.delete(k)

    def clear(self) -> None:
        self.delete_batch(list(self.keys()))


# ---------------------------------------------------------------- programs


@dataclass(frozen=True)
class TestRunResult:
    """Outcome of BPF_PROG_TEST_RUN."""

    __test__ = False  # not a pytest class
    retval: int
    data_out: bytes
    duration_ns: int


@dataclass(frozen=True)
class ProgInfo:
    id: int
    tag: str
    name: str
    prog_type: int
    map_ids: tuple[int, ...]


def prog_info(fd: int, what: str = "program") -> ProgInfo:
    info = _ProgInfo()
    size = c_uint32(ctypes.sizeof(info))
    _check(lib.bpf_obj_get_info_by_fd(fd, byref(info), byref(size)), "get info of", what)
    n = info.nr_map_ids
    ids: tuple[int, ...] = ()
    if n:
        arr = (c_uint32 * n)()
        info2 = _ProgInfo(nr_map_ids=n, map_ids=ctypes.addressof(arr))
        size = c_uint32(ctypes.sizeof(info2))
        _check(lib.bpf_obj_get_info_by_fd(fd, byref(info2), byref(size)), "get map ids of", what)
        ids = tuple(arr[: min(n, info2.nr_map_ids)])
    return ProgInfo(info.id, bytes(info.tag).hex(), info.name.decode(), info.type, ids)


def query_tcx(ifindex: int, attach_type: int, what: str = "device") -> list[int]:
    """Ids of the programs attached at a tcx hook of a device of the current netns, in the
    order they run (BPF_PROG_QUERY: its target_fd field is the ifindex for tcx)."""
    ids = (c_uint32 * 64)()
    count = c_uint32(64)
    attach_flags = c_uint32(0)
    ret = lib.bpf_prog_query(ifindex, attach_type, 0, byref(attach_flags), ids, byref(count))
    if ret == -errno_mod.ENOENT or ret == -errno_mod.ENODEV:
        return []
    _check(ret, "query programs of", what)
    return list(ids[: count.value])


def prog_info_by_id(prog_id: int) -> ProgInfo | None:
    """ProgInfo of a program id, None when it is gone."""
    fd = lib.bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        return None
    try:
        return prog_info(fd, f"program id {prog_id}")
    finally:
        _close_fd(fd)


class Program:
    """A loaded BPF program by fd."""

    def __init__(self, name: str, fd: int, owned: bool = False) -> None:
        self.name, self.fd, self._owned = name, fd, owned

    @classmethod
    def from_pin(cls, path: str | Path) -> Program:
        fd = lib.bpf_obj_get(str(path).encode())
        _check(fd, "open pinned program", str(path))
        return cls(prog_info(fd).name, fd, owned=True)

    @classmethod
    def from_id(cls, prog_id: int) -> Program:
        fd = _check(lib.bpf_prog_get_fd_by_id(prog_id), "open program id", str(prog_id))
        return cls(prog_info(fd).name, fd, owned=True)

    def pin(self, path: str | Path) -> None:
        _check(lib.bpf_obj_pin(self.fd, str(path).encode()), "pin", f"program {self.name} at {path}")

    def info(self) -> ProgInfo:
        return prog_info(self.fd, f"program {self.name}")

    def test_run(self, data: bytes, repeat: int = 1) -> TestRunResult:
        """Run the program on one frame (BPF_PROG_TEST_RUN): no netns, no device."""
        out = create_string_buffer(max(len(data) + 512, 2048))
        opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts))
        inp = create_string_buffer(data, len(data))
        opts.data_in = ctypes.addressof(inp)
        opts.data_size_in = len(data)
        opts.data_out = ctypes.addressof(out)
        opts.data_size_out = len(out)
        opts.repeat = repeat
        _check(lib.bpf_prog_test_run_opts(self.fd, byref(opts)), "test run", f"program {self.name}")
        return TestRunResult(opts.retval, out.raw[: opts.data_size_out], opts.duration)

    def close(self) -> None:
        if self._owned and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> Program:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- links


@dataclass(frozen=True)
class LinkInfo:
    id: int
    link_type: int
    prog_id: int
    ifindex: int  # tcx links: 0 once the device is gone
    attach_type: int


class Link:
    """A BPF link (attachment) by fd; pinning it keeps the attachment after we exit."""

    def __init__(self, fd: int, label: str) -> None:
        self.fd, self.label = fd, label

    @classmethod
    def create(cls, prog_fd: int, target: int, attach_type: int, label: str) -> Link:
        fd = lib.bpf_link_create(prog_fd, target, attach_type, None)
        _check(fd, "attach", label)
        return cls(fd, label)

    @classmethod
    def from_pin(cls, path: str | Path) -> Link:
        fd = lib.bpf_obj_get(str(path).encode())
        _check(fd, "open pinned link", str(path))
        return cls(fd, f"link {path}")

    @classmethod
    def from_id(cls, link_id: int) -> Link:
        fd = _check(lib.bpf_link_get_fd_by_id(link_id), "open link id", str(link_id))
        return cls(fd, f"link id {link_id}")

    def pin(self, path: str | Path) -> None:
        _check(lib.bpf_obj_pin(self.fd, str(path).encode()), "pin", f"{self.label} at {path}")

    def info(self) -> LinkInfo:
        info = _LinkInfo()
        size = c_uint32(ctypes.sizeof(info))
        _check(lib.bpf_obj_get_info_by_fd(self.fd, byref(info), byref(size)), "get info of", self.label)
        return LinkInfo(info.id, info.type, info.prog_id, info.ifindex, info.attach_type)

    def update(self, prog_fd: int) -> None:
        """Swap the attached program atomically (BPF_LINK_UPDATE)."""
        _check(lib.bpf_link_update(self.fd, prog_fd, None), "replace program of", self.label)

    def detach(self) -> None:
        _check(lib.bpf_link_detach(self.fd), "detach", self.label)

    def close(self) -> None:
        _close_fd(self.fd)
        self.fd = -1

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- objects


class BpfObject:
    """An ELF object opened and loaded by libbpf; owns its maps and programs until close()."""

    def __init__(self, ptr: int, path: str) -> None:
        self._ptr: int | None = ptr
        self.path = path

    @classmethod
    def open(cls, path: str | Path) -> BpfObject:
        _take_log()
        ptr = lib.bpf_object__open_file(str(path).encode(), None)
        if not ptr:
            err = ctypes.get_errno() or errno_mod.EINVAL
            raise DataplaneError("open BPF object", str(path), err, _take_log().strip())
        return cls(ptr, str(path))

    @property
    def ptr(self) -> int:
        if self._ptr is None:
            raise DataplaneError("use", f"BPF object {self.path}", errno_mod.EBADF, "object is closed")
        return self._ptr

    def _map_ptr(self, name: str) -> int:
        p = lib.bpf_object__find_map_by_name(self.ptr, name.encode())
        if not p:
            raise DataplaneError("find map", f"{name} in {self.path}", errno_mod.ENOENT)
        return p

    def map_names(self) -> list[str]:
        names, cur = [], None
        while True:
            cur = lib.bpf_object__next_map(self.ptr, cur)
            if not cur:
                return names
            names.append(lib.bpf_map__name(cur).decode())

    def program_names(self) -> list[str]:
        names, cur = [], None
        while True:
            cur = lib.bpf_object__next_program(self.ptr, cur)
            if not cur:
                return names
            names.append(lib.bpf_program__name(cur).decode())

    def map_sizes(self, name: str) -> tuple[int, int]:
        """(key size, value size) the object declares for a map (before load)."""
        ptr = self._map_ptr(name)
        return int(lib.bpf_map__key_size(ptr)), int(lib.bpf_map__value_size(ptr))

    def reuse_map(self, name: str, fd: int) -> None:
        """Make the object use an existing (pinned) map instead of creating its own."""
        _check(lib.bpf_map__reuse_fd(self._map_ptr(name), fd), "reuse map", f"{name} of {self.path}")

    def load(self) -> None:
        _take_log()
        ret = lib.bpf_object__load(self.ptr)
        if ret < 0:
            raise DataplaneError("load BPF object", self.path, -ret, _take_log().strip())
        _take_log()

    def map(self, name: str) -> Map:
        fd = lib.bpf_map__fd(self._map_ptr(name))
        _check(fd, "get fd of map", f"{name} in {self.path} (not loaded?)")
        return Map(fd, owned=False, label=f"map {name}")

    def program(self, name: str) -> Program:
        p = lib.bpf_object__find_program_by_name(self.ptr, name.encode())
        if not p:
            raise DataplaneError("find program", f"{name} in {self.path}", errno_mod.ENOENT)
        fd = lib.bpf_program__fd(p)
        _check(fd, "get fd of program", f"{name} in {self.path} (not loaded?)")
        return Program(name, fd)

    def close(self) -> None:
        if self._ptr is not None:
            lib.bpf_object__close(self._ptr)
            self._ptr = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def dup_fd(fd: int) -> int:
    """A private copy of an fd (keeps a map alive after its object closes)."""
    return os.dup(fd)


__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_NOEXIST",
    "BPF_TCX_EGRESS",
    "BPF_TCX_INGRESS",
    "BpfObject",
    "Link",
    "Map",
    "Program",
    "TestRunResult",
    "num_possible_cpus",
]

"""Per-packet cost of the datapath with BPF_PROG_TEST_RUN, 0 vs 50,000 policy entries.

Run as root: `.venv/bin/python bench/datapath_bench.py [--repeat N] [--entries N]`.
Scenarios (from_pod, endpoint A enforcing egress):
  drop         a default-deny drop (policy lookups miss; one ringbuf event per packet)
  established  a conntrack hit judged at the current policy revision (no policy lookup, no event)
  new          a new allowed connection: policy hit + CT create + event. BPF_PROG_TEST_RUN
               repeats one frame, so each run is one packet (repeat=1) and the CT entry is
               deleted in between; `established/1` is the same single-run mode for comparison.
  rejudge/1    a conntrack hit after a policy change (the revision was bumped before each run):
               the forward packet is judged by policy again (the first packet of each tracked
               connection after an apply pays this once).
Staged policies (a second table, with the small map): endpoint A without staged policies, with
staged policies that judge like the enforced ones (one more policy lookup per new connection, no
event), and with staged policies that would drop the allowed connection (the lookup and an AUDIT
event). Established packets and drops must not pay anything.
L7 ports (a third table): the same scenarios on a node whose config has CONFIG_F_PROXY (it holds
HTTP rules), where each TCP packet from a pod first looks for a proxy socket; a node without L7
ports pays nothing for the redirect.
The kernel times the loop itself (bpf_test_run), so syscall cost is excluded. Compare ratios
within one run, not absolutes (a shared machine is noisy).
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "privileged"))

from datapath_harness import TC_ACT_OK, TC_ACT_SHOT, Datapath, Rule, build_object

from meshctl.dataplane import frames
from meshctl.dataplane.frames import IPPROTO_TCP, TCP_ACK, TCP_SYN
from meshctl.dataplane.structs import ConfigFlags, DatapathConfig, PolicyKey
from meshctl.nodestate import AUDIT_MAP_BIT, Direction

A, B, WORLD_HOST = "10.0.1.1", "10.0.1.2", "192.0.2.10"
A_EP, A_ID, B_ID = 11, 1001, 1002
ALLOWED_PORT = 80
INNER_MAX = 65536
# Every drop writes a 56-byte ringbuf record; 250,000 of them fit the 16 MiB ringbuf. More would
# make reserve fail and drops look cheaper than they are.
DROP_REPEAT_MAX = 250_000


def filler_rules(n: int) -> list[Rule]:
    """n distinct entries that never match the benchmark flows (other identities, ports)."""
    rules = []
    for i in range(n):
        ident = 100_000 + i // 64
        port = 1024 + (i % 64) * 7
        rules.append(Rule(Direction.EGRESS, ident, IPPROTO_TCP, port, 16, cookie=i + 1000))
    return rules


def install(dp: Datapath, entries: int, staged: str = "") -> None:
    """staged: "" none, "same" staged policies that judge alike, "differs" ones that would drop."""
    dp.reset()
    dp.set_endpoint(A, A_EP, A_ID, ingress=True, egress=True, audit_egress=bool(staged))
    dp.set_endpoint(B, 12, B_ID, ingress=True, egress=True)
    allow = Rule(Direction.EGRESS, B_ID, IPPROTO_TCP, ALLOWED_PORT, 16, cookie=1)
    rules = [allow, *filler_rules(entries)]
    dp.install_policy(A_EP, dp.new_policy_map(rules, max_entries=INNER_MAX))
    if staged:
        audit = rules if staged == "same" else rules[1:]
        dp.install_policy(A_EP | AUDIT_MAP_BIT, dp.new_policy_map(audit, max_entries=INNER_MAX))


def per_packet_repeat(dp: Datapath, frame: bytes, expect: int, repeat: int) -> float:
    res = dp.from_pod.test_run(frame, repeat=repeat)
    if res.retval != expect:
        raise SystemExit(f"unexpected verdict {res.retval} (wanted {expect})")
    dp.events()  # keep the ringbuf from filling (a full ringbuf makes drops look cheaper)
    return float(res.duration_ns)


def per_packet_single(dp: Datapath, frame: bytes, expect: int, runs: int, delete_ct: bytes | None,
                      bump: bool = False) -> float:
    samples = []
    for i in range(runs):
        if delete_ct is not None:
            dp.maps["ct"].delete(delete_ct)
        if bump:
            dp.bump_policy_revision()
        res = dp.from_pod.test_run(frame, repeat=1)
        if res.retval != expect:
            raise SystemExit(f"unexpected verdict {res.retval} (wanted {expect})")
        samples.append(res.duration_ns)
        if i % 50_000 == 49_999:
            dp.events()
    dp.events()
    return float(statistics.median(samples))


def measure(dp: Datapath, entries: int, repeat: int, runs: int, staged: str = "",
            proxy: bool = False) -> dict[str, float]:
    install(dp, entries, staged)
    if proxy:  # the node has L7 ports: TCP packets look up the proxy's sockets first
        dp.set_config(DatapathConfig(flags=int(ConfigFlags.PROXY)))
    deny = frames.tcp_frame(A, WORLD_HOST, 40000, 443, TCP_SYN)
    syn = frames.tcp_frame(A, B, 40001, ALLOWED_PORT, TCP_SYN)
    ack = frames.tcp_frame(A, B, 40001, ALLOWED_PORT, TCP_ACK)
    ct_key = dp.ct_key(A, B, 40001, ALLOWED_PORT, IPPROTO_TCP, Direction.EGRESS)
    out = {"drop": per_packet_repeat(dp, deny, TC_ACT_SHOT, min(repeat, DROP_REPEAT_MAX))}
    if dp.from_pod.test_run(syn).retval != TC_ACT_OK:
        raise SystemExit("the allowed SYN was dropped")
    out["established"] = per_packet_repeat(dp, ack, TC_ACT_OK, repeat)
    out["established/1"] = per_packet_single(dp, ack, TC_ACT_OK, runs, None)
    out["new/1"] = per_packet_single(dp, syn, TC_ACT_OK, runs, ct_key)
    if dp.from_pod.test_run(syn).retval != TC_ACT_OK:
        raise SystemExit("the allowed SYN was dropped")
    if hasattr(dp, "bump_policy_revision"):  # objects before the policy revision have no rejudge
        out["rejudge/1"] = per_packet_single(dp, ack, TC_ACT_OK, runs, None, bump=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1_000_000, help="BPF_PROG_TEST_RUN repeat per scenario")
    ap.add_argument("--runs", type=int, default=20_000, help="single runs for the repeat=1 scenarios")
    ap.add_argument("--entries", type=int, default=50_000, help="policy entries in the big inner map")
    args = ap.parse_args()
    if args.entries + 1 > INNER_MAX:
        raise SystemExit(f"--entries must be below {INNER_MAX}")
    print(f"policy key {ctypes.sizeof(PolicyKey)} B; repeat={args.repeat:,} (drops: {DROP_REPEAT_MAX:,} max)"
          f" runs={args.runs:,}", file=sys.stderr)
    dp = Datapath(build_object())
    try:
        small = measure(dp, 0, args.repeat, args.runs)
        big = measure(dp, args.entries, args.repeat, args.runs)
        same = measure(dp, 0, args.repeat, args.runs, staged="same")
        differs = measure(dp, 0, args.repeat, args.runs, staged="differs")
        proxied = measure(dp, 0, args.repeat, args.runs, proxy=True)
    finally:
        dp.reset()
        dp.close()
    print(f"{'scenario':<16}{'0 entries':>12}{f'{args.entries:,} entries':>18}{'ratio':>8}")
    for name in small:
        print(f"{name:<16}{small[name]:>9.0f} ns{big[name]:>15.0f} ns{big[name] / small[name]:>8.2f}")
    header = f"{'staged policies':<16}{'none':>12}{'judge alike':>14}{'ratio':>8}"
    header += f"{'AUDIT event':>14}{'ratio':>8}"
    print("\n" + header)
    for name in small:
        print(f"{name:<16}{small[name]:>9.0f} ns{same[name]:>11.0f} ns{same[name] / small[name]:>8.2f}"
              f"{differs[name]:>11.0f} ns{differs[name] / small[name]:>8.2f}")
    print(f"\n{'L7 ports':<16}{'none':>12}{'on the node':>14}{'ratio':>8}")
    for name in small:
        print(f"{name:<16}{small[name]:>9.0f} ns{proxied[name]:>11.0f} ns{proxied[name] / small[name]:>8.2f}")


if __name__ == "__main__":
    main()

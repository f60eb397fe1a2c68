"""Resolve each name with the given DNS server, then connect to the first address on 443.

Run inside the payment processor: `meshctl lab exec -C examples/fqdn-egress
payments/payment-processor -- .venv/bin/python examples/fqdn-egress/resolve_and_connect.py
KUBE_DNS_IP NAME...`. Prints the name, the answer's rcode and addresses, and what the external
host said (or why the connection failed).
"""

import socket
import sys

from dnslib import RCODE, DNSRecord

server, names = sys.argv[1], sys.argv[2:]
for name in names:
    answer = DNSRecord.parse(DNSRecord.question(name).send(server, 53, timeout=3))
    ips = [str(rr.rdata) for rr in answer.rr]
    said = "-"
    if ips:
        try:
            with socket.create_connection((ips[0], 443), timeout=1) as conn:
                said = conn.recv(64).decode().strip()
        except OSError as err:
            said = f"connect: {err}"
    print(f"{name:<18} {RCODE.get(answer.header.rcode):<8} {','.join(ips) or '-':<14} {said}")

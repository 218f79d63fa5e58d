"""Ports for processes the tests and benchmarks start on 127.0.0.1.

Below the kernel's ephemeral range (ip_local_port_range starts at 32768 by default), so no
outgoing connection or bind(0) of any process, the nodes' own included, can take a port between
the moment it is chosen and the moment a node binds it, nor while a killed node is down.
"""
import os
import random
import socket

_PORT_LOW, _PORT_HIGH = 20000, 32000
_port_rng = random.Random(os.getpid())


def free_port_range(n):
    """The first of n consecutive TCP ports on 127.0.0.1 that are free now."""
    for _ in range(1000):
        base = _port_rng.randrange(_PORT_LOW, _PORT_HIGH - n)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports in {_PORT_LOW}..{_PORT_HIGH}")


def free_ports(n):
    """n distinct TCP ports on 127.0.0.1 that are free now, outside the ephemeral range."""
    ports = []
    while len(ports) < n:
        p = free_port_range(1)
        if p not in ports:
            ports.append(p)
    return ports

#!/usr/bin/env python3
"""A xenith client in Python, using only the `msgpack` package (PyPI).

It creates a VM from a spec, starts it, waits for its guest agent to report
an IP address through events, prints it, and shuts the VM down.

    pip install msgpack        # or Debian's python3-msgpack
    python3 examples/client.py [--socket PATH] [--name NAME] [--keep]

The socket is found as xenith's own tools find it: --socket, else
$XENITH_SOCKET, else /run/xenith/xenith.sock (root), else
$XDG_RUNTIME_DIR/xenith/xenith.sock, else /tmp/xenith-$UID/xenith.sock.
"""

import argparse
import os
import socket
import sys
import time

import msgpack


def default_socket():
    if os.environ.get("XENITH_SOCKET"):
        return os.environ["XENITH_SOCKET"]
    if os.geteuid() == 0:
        return "/run/xenith/xenith.sock"
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "xenith", "xenith.sock")
    return "/tmp/xenith-%d/xenith.sock" % os.geteuid()


class RpcError(Exception):
    def __init__(self, error):
        self.code = error.get("code")
        self.details = error.get("details", [])
        super().__init__("%s: %s" % (self.code, error.get("message")))


class Client:
    """MessagePack-RPC over xenith's Unix socket: requests [0, id, method,
    [params]], responses [1, id, error, result], notifications
    [2, method, [params]] (kept until asked for)."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.unpacker = msgpack.Unpacker(raw=False)
        self.next_id = 0
        self.notifications = []

    def _read(self, timeout=None):
        self.sock.settimeout(timeout)
        while True:
            for msg in self.unpacker:
                return msg
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("xenithd closed the connection")
            self.unpacker.feed(data)

    def call(self, method, **params):
        self.next_id += 1
        msgid = self.next_id
        args = [params] if params else []
        self.sock.sendall(msgpack.packb([0, msgid, method, args], use_bin_type=True))
        while True:
            msg = self._read()
            if msg[0] == 2:
                self.notifications.append((msg[1], msg[2][0] if msg[2] else None))
            elif msg[0] == 1 and msg[1] == msgid:
                if msg[2] is not None:
                    raise RpcError(msg[2])
                return msg[3]

    def notification(self, deadline):
        """The next notification, or None at the deadline."""
        if self.notifications:
            return self.notifications.pop(0)
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            msg = self._read(timeout=left)
        except socket.timeout:
            return None
        if msg[0] == 2:
            return (msg[1], msg[2][0] if msg[2] else None)
        return self.notification(deadline)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", default=default_socket())
    ap.add_argument("--name", default="py-example")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--keep", action="store_true", help="leave the VM defined")
    args = ap.parse_args()

    c = Client(args.socket)
    spec = {
        "name": args.name,
        "type": "pv",
        "memory_mib": 256,
        "vcpus": 1,
        "kernel": "/boot/vmlinuz",
        "cmdline": "console=hvc0",
        "disks": [{"path": "/var/lib/xenith/images/%s.img" % args.name, "device": "xvda", "mode": "rw"}],
        "nics": [{"bridge": "xenbr0"}],
        "on_crash": "destroy",
    }
    uuid = c.call("vm.create", spec=spec)["uuid"]
    print("created %s (%s)" % (args.name, uuid))

    # Subscribe before starting, so that no event is missed.
    c.call("event.subscribe", classes=["vm"])
    vm = c.call("vm.start", vm=uuid)
    print("started: %s, domid %s" % (vm["power_state"], vm["domid"]))

    ip = None
    deadline = time.monotonic() + args.timeout
    # It may have reported before the subscription saw it: look once.
    guest = c.call("vm.get", vm=uuid)["guest"]
    if guest["ips"]:
        ip = sorted(guest["ips"].values())[0]
    while ip is None:
        note = c.notification(deadline)
        if note is None:
            print("no IP address from the guest agent within %ss" % args.timeout, file=sys.stderr)
            return 1
        method, event = note
        if method == "event.dropped":
            # Fell behind: read the state again.
            ips = c.call("vm.get", vm=uuid)["guest"]["ips"]
        elif method == "event" and event["id"] == uuid:
            ips = event["snapshot"].get("guest", {}).get("ips", {})
        else:
            continue
        if ips:
            ip = sorted(ips.values())[0]
    print("guest agent reports IP %s" % ip)

    vm = c.call("vm.shutdown", vm=uuid)
    print("shut down: %s" % vm["power_state"])
    if not args.keep:
        c.call("vm.remove", vm=uuid)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RpcError as e:
        print("xenith: %s" % e, file=sys.stderr)
        sys.exit(1)

"""A private network namespace for the workers of a local cluster: nothing they open listens outside.

TensorFlow 2.21's gRPC server hard-codes `0.0.0.0:<port>` (grpc_server_lib.cc), so the workers of
`strategy=multi_worker` listen on every interface of the host whatever address TF_CONFIG names, and
horovodrun's rendezvous server binds all interfaces too. For a cluster on one machine the real fix
is isolation: a small holder process creates one network namespace (with only a loopback device,
brought up) and every worker joins that same namespace before it execs, so the workers reach each
other on 127.0.0.1 and no other host, container or network namespace can reach them.

Unprivileged users get the namespace through a user namespace (`unshare(CLONE_NEWUSER|CLONE_NEWNET)`,
where the kernel allows it); root (CI) creates the network namespace directly. Where neither works,
`NetworkNamespace.create()` returns None with the reason and the caller warns and runs unisolated.

Example:
    ns = NetworkNamespace.create()          # None: not available here (ns_unavailable_reason says why)
    subprocess.Popen(cmd, preexec_fn=ns.enter)   # the child runs inside the namespace
    ns.close()
"""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import sys

log = logging.getLogger("scaleflow")
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000

# The holder: create the namespace(s), bring `lo` up, say "ready", and live until its stdin closes
# (the launcher exited or closed it), so the namespace lives exactly as long as the job.
_HOLDER = r"""
import ctypes, fcntl, os, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
flags, uid, gid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if libc.unshare(flags) != 0:
    print("error unshare: " + os.strerror(ctypes.get_errno()), flush=True)
    sys.exit(1)
if flags & 0x10000000:  # a user namespace: map this user to root inside it (and only this user)
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ifreq = fcntl.ioctl(s, 0x8913, struct.pack("16sH14x", b"lo", 0))  # SIOCGIFFLAGS
up = struct.unpack("16sH14x", ifreq)[1] | 0x1  # IFF_UP
fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", up))  # SIOCSIFFLAGS
print("ready", flush=True)
sys.stdin.read()
"""


class NetworkNamespace:
    """One private network namespace (loopback only), held open by a small process.

    Args:
        holder: the process that owns the namespace.
        user_ns: whether a user namespace was needed (unprivileged); children join it first.
    """

    def __init__(self, holder: subprocess.Popen, user_ns: bool):
        self.holder, self.user_ns = holder, user_ns
        self.pid = holder.pid

    @classmethod
    def create(cls) -> "NetworkNamespace | None":
        """A new namespace, or None when this machine does not allow one (see `unavailable_reason`)."""
        global unavailable_reason
        attempts = ([CLONE_NEWNET] if os.geteuid() == 0 else []) + [CLONE_NEWUSER | CLONE_NEWNET]
        reasons = []
        for flags in attempts:
            holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(flags), str(os.getuid()), str(os.getgid())],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, close_fds=True)
            line = holder.stdout.readline().strip()
            if line == "ready":
                ns = cls(holder, bool(flags & CLONE_NEWUSER))
                try:  # prove that a child can join it before anyone relies on it
                    subprocess.run([sys.executable, "-c", "pass"], preexec_fn=ns.enter, check=True, timeout=30)
                    return ns
                except (subprocess.SubprocessError, OSError) as e:
                    reasons.append(f"joining it failed ({e})")
                    ns.close()
                    continue
            holder.kill()
            _, err = holder.communicate()
            reasons.append(line.removeprefix("error ") or (err.strip().splitlines() or ["no output"])[-1])
        unavailable_reason = "; ".join(reasons) or "not Linux"
        return None

    def enter(self) -> None:
        """Join the namespace: for `preexec_fn` (runs in the forked child, single-threaded, before exec)."""
        join(self.pid, self.user_ns)

    def inode(self) -> int:
        """The namespace's identity (the inode of /proc/<pid>/ns/net), e.g. to check a process is in it."""
        return os.stat(f"/proc/{self.pid}/ns/net").st_ino

    def close(self) -> None:
        if self.holder.poll() is None:
            try:
                self.holder.stdin.close()
                self.holder.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.holder.kill()
                self.holder.wait()


unavailable_reason = ""  # why the last NetworkNamespace.create() returned None


def join(holder_pid: int, user_ns: bool) -> None:
    """Join the namespace held by `holder_pid` (its user namespace first when it has one). The calling
    process must be single-threaded (a forked child before exec, or a process that starts no thread
    before calling it). Sockets opened before stay in the namespace they were opened in."""
    libc = ctypes.CDLL(None, use_errno=True)
    kinds = (("user", CLONE_NEWUSER),) if user_ns else ()
    for kind, flag in kinds + (("net", CLONE_NEWNET),):
        fd = os.open(f"/proc/{holder_pid}/ns/{kind}", os.O_RDONLY)
        try:
            if libc.setns(fd, flag) != 0:
                raise OSError(ctypes.get_errno(), f"setns({kind}): {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(fd)


def loopback_only() -> bool:
    """True when this process's network namespace has no device but `lo` (e.g. a local worker already
    isolated by its launcher): nothing it opens is reachable from another host."""
    try:
        with open("/proc/net/dev") as f:
            devices = [line.split(":", 1)[0].strip() for line in f.readlines()[2:] if ":" in line]
    except OSError:
        return False
    return devices == ["lo"]


def isolation_hint(what: str) -> str:
    """What a user reads when the workers run unisolated: what is exposed and how to restrict it."""
    return (f"{what} listen on every interface of this host (0.0.0.0), reachable by anyone who can reach "
            "this machine: block those ports with a firewall, or allow user namespaces (sysctl "
            "user.max_user_namespaces > 0, kernel.unprivileged_userns_clone=1) so that scaleflow isolates them")


def private_network(cfg, what: str, exposure: str | None = None):
    """A private network namespace for this job's local workers (nothing they open listens outside),
    or None, with a warning that says what is exposed (`exposure`, default: `what` on every interface)
    and how to restrict it."""
    exposure = exposure or isolation_hint(what)
    if not cfg.strategy.get("isolate_network", True):
        log.warning("strategy.isolate_network=false: %s", exposure)
        return None
    ns = NetworkNamespace.create()
    if ns is None:
        log.warning("could not start the local workers in a private network namespace (%s): %s",
                    unavailable_reason, exposure)
    else:
        log.info("local workers isolated in a private network namespace (loopback only): %s are "
                 "reachable from no other host or namespace", what)
    return ns

"""A running cluster is private, and its faults are pinned on the worker that caused them.

- Nothing a local multi-process job opens listens outside: its workers run in one private network
  namespace (loopback only) and horovodrun's own servers bind 127.0.0.1; a Horovod rank's config is in
  a file only its owner can read, never on a command line (visible to every user in `ps`).
- A hung worker (SIGSTOP) makes every peer block in the next collective; with strategy.timeout_s=5
  their step watchdogs fire together, and the healthy chief used to be blamed while run.json stayed
  `running`. The stopped worker is named, and run.json says `failed` with that reason.

One real 2-worker job per strategy checks both (multi-process tests: slow-marked, kept short).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaleflow.cluster import heartbeat, netns

LONG_RUN = ["trainer.epochs=200", "data.num_examples=2048", "model.hidden_units=[8]", "strategy.timeout_s=5",
            "export=none", "data.validation_split=0"]


def steps(run_dir: Path, rank: int) -> int:
    beat = heartbeat.read(str(run_dir / "workers"), rank)
    return beat.steps if beat else 0


def start(run_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "scaleflow", *args, f"hydra.run.dir={run_dir}", *LONG_RUN],
                            cwd=run_dir.parent, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_worker_once_training(proc, run_dir: Path, rank: int, pid_of) -> None:
    deadline = time.monotonic() + 180
    while min(steps(run_dir, r) for r in (0, 1)) < 5:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.2)
    os.kill(pid_of(rank), signal.SIGSTOP)


LOOPBACK = ("127.", "::1", "::ffff:127.")


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _address(hex_addr: str) -> str:
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1]) + f":{int(port, 16)}"
    words = [raw[i:i + 4][::-1].hex() for i in range(0, 16, 4)]  # /proc prints 4-byte words host-endian
    full = "".join(words)
    groups = [full[i:i + 4].lstrip("0") or "0" for i in range(0, 32, 4)]
    text = ":".join(groups)
    if full.startswith("0" * 20 + "ffff"):
        text = "::ffff:" + ".".join(str(b) for b in bytes.fromhex(full[24:]))
    elif full == "0" * 31 + "1":
        text = "::1"
    elif full == "0" * 32:
        text = "::"
    return f"{text}:{int(port, 16)}"


def listeners(pids: list[int]) -> list[tuple[int, str, bool]]:
    """(pid, local address, in this test's network namespace) of every listening TCP socket of `pids`."""
    here = os.stat("/proc/self/ns/net").st_ino
    found = []
    for pid in pids:
        try:
            inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")
                      if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")}
            same = os.stat(f"/proc/{pid}/ns/net").st_ino == here
            for table in ("tcp", "tcp6"):
                for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                    cols = line.split()
                    if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                        found.append((pid, _address(cols[1]), same))
        except OSError:
            continue  # the process ended meanwhile
    return found


def horovod_missing() -> str | None:
    try:
        from scaleflow_horovod import install

        install.check()
        return None
    except Exception as e:  # noqa: BLE001 - the reason is the skip message
        return str(e)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["multi_worker", "horovod"])
def test_a_two_worker_job_listens_only_privately_and_a_stopped_worker_is_named(tmp_path, strategy):
    if strategy == "horovod" and horovod_missing():
        pytest.skip(f"no usable Horovod: {horovod_missing()}")
    probe = netns.NetworkNamespace.create()  # CI runs as root on this kind of machine: available
    isolated = probe is not None
    if probe is not None:
        probe.close()
    run_dir = tmp_path / "run"
    proc = start(run_dir, f"strategy={strategy}", "strategy.num_workers=2")
    pid_of = lambda r: heartbeat.read(str(run_dir / "workers"), r).pid  # noqa: E731
    try:
        deadline = time.monotonic() + 180
        while min(steps(run_dir, r) for r in (0, 1)) < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.2)
        sockets = listeners(descendants(proc.pid))
        if strategy == "horovod":
            config = run_dir / ".horovod-config.yaml"
            assert stat.S_IMODE(config.stat().st_mode) == 0o600
            argvs = [Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0") for p in descendants(proc.pid)
                     if Path(f"/proc/{p}/cmdline").exists()]
            passed = [argv[argv.index(b"--config") + 1] for argv in argvs if b"--config" in argv]
            assert passed and all(value == str(config).encode() for value in passed), passed  # a path only
        stop_worker_once_training(proc, run_dir, 1, pid_of)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            for pid in descendants(proc.pid):
                os.kill(pid, signal.SIGKILL)
            proc.wait()

    assert sockets, "the job listens on nothing: the check below would prove nothing"
    exposed = [(pid, addr) for pid, addr, here in sockets if here and not addr.startswith(LOOPBACK)]
    assert not exposed, f"listening outside the job's private namespace: {exposed}; all: {sockets}"
    if isolated:
        assert all(not here for _, _, here in sockets), sockets  # every server is in the private namespace

    assert proc.returncode != 0
    first = next(line for line in err.splitlines() if line.startswith("scaleflow: error:"))
    named = "worker-1" if strategy == "multi_worker" else "rank 1"
    assert named in first and "stopped" in first and "worker-0 (pid" not in first, err[-3000:]
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "failed" and named in manifest["error"], manifest["error"]


def test_heartbeats_name_the_worker_that_fell_silent_first(tmp_path):
    now = time.time()
    for rank, (t, n) in enumerate([(now, 40), (now - 5, 40), (now - 0.2, 40)]):
        (tmp_path / f"heartbeat-{rank}").write_text(f"{t:.3f} {n} 999999999\n")
    rank, why = heartbeat.suspect(str(tmp_path), range(3))
    assert rank == 1 and "stopped making progress" in why
    (tmp_path / "heartbeat-1").write_text(f"{now:.3f} 38 999999999\n")  # all beating: the one behind
    assert heartbeat.suspect(str(tmp_path), range(3))[0] == 1
    (tmp_path / "heartbeat-1").write_text(f"{now:.3f} 40 999999999\n")  # nothing singles one out
    assert heartbeat.suspect(str(tmp_path), range(3)) is None
    assert heartbeat.suspect(str(tmp_path), range(3), started_after=now + 10) is None  # a previous attempt's


def test_a_stopped_process_is_named_as_stopped(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.kill(sleeper.pid, signal.SIGSTOP)
        time.sleep(0.2)
        now = time.time()
        (tmp_path / "heartbeat-0").write_text(f"{now:.3f} 10 {os.getpid()}\n")
        (tmp_path / "heartbeat-1").write_text(f"{now:.3f} 10 {sleeper.pid}\n")
        rank, why = heartbeat.suspect(str(tmp_path), range(2))
        assert rank == 1 and "stopped (process state T" in why
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_child_joins_the_private_namespace_and_sees_only_loopback():
    ns = netns.NetworkNamespace.create()
    if ns is None:
        pytest.skip(f"no network namespaces on this machine: {netns.unavailable_reason}")
    try:
        probe = ("import os, socket; s = socket.create_server(('127.0.0.1', 0)); "
                 "print(os.stat('/proc/self/ns/net').st_ino, sorted(n for _, n in socket.if_nameindex()))")
        out = subprocess.run([sys.executable, "-c", probe], preexec_fn=ns.enter, capture_output=True, text=True,
                             check=True).stdout.split(maxsplit=1)
        assert int(out[0]) == ns.inode() != os.stat("/proc/self/ns/net").st_ino
        assert out[1].strip() == "['lo']"
    finally:
        ns.close()
    assert ns.holder.poll() is not None  # the namespace ends with the job


def test_without_isolation_the_log_says_what_is_exposed_and_how_to_restrict_it(caplog):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"strategy": {"isolate_network": False}})
    assert netns.private_network(cfg, "the workers' TensorFlow gRPC servers (ports 1, 2)") is None
    assert "gRPC servers (ports 1, 2) listen on every interface" in caplog.text and "firewall" in caplog.text

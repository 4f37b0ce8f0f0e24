"""data.service=local|<host:port>: the input pipelines run on a real tf.data service (a dispatcher and
workers as separate processes on 127.0.0.1) and yield exactly what they yield in process.

Records carry their id in their first feature (test_sharding_properties' writers), so a batch says
which records it holds. The check is the strongest one: every batch of every epoch, in order, equal to
the in-process pipeline's, which implies the same multiset per epoch (nothing dropped, nothing
duplicated). A control run through ShardingPolicy.OFF shows that the same check catches TensorFlow's
duplicating policy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, cli, compose
from test_sharding_integration import _check_epochs, _ids, _plan

EPOCHS = 3


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


# ------------------------------------------------------------------------- config (no TensorFlow)
@pytest.mark.parametrize("overrides,key", [
    (["data.service=sideways"], "data.service"),
    (["data.service=host:99999"], "data.service"),
    (["data.service=http://host:5050"], "data.service"),
    (["data.service=-host:5050"], "data.service"),
    (["data.service=local", "data.service_workers=0"], "data.service_workers"),
    (["data.service=10.0.0.5:5050", "data.service_workers=2"], "data.service_workers"),
    (["data.service=local", "data.shard=random", "data.reshuffle_each_epoch=true"], "data.reshuffle_each_epoch"),
])
def test_bad_service_settings_are_config_errors_naming_the_key(overrides, key):
    from scaleflow.validation import validate
    from scaleflow.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        validate(compose(*overrides))
    assert e.value.key == key


def test_service_addresses_parse():
    from scaleflow.data.service_config import default_workers, describe, parse

    assert describe(compose()) == {"runs": "in-process", "service": "off"}  # run.json data.input without a service

    assert parse("off").kind == "off" and parse("local").kind == "local"
    assert parse("grpc://127.0.0.1:5050").address == "127.0.0.1:5050"
    assert parse("[::1]:5050").host == "::1"
    assert default_workers(compose("data.service=local"), cores=2) == 1
    assert default_workers(compose("data.service=local"), cores=16) == 8
    assert default_workers(compose("data.service=local", "strategy=multi_worker", "strategy.num_workers=2"),
                           cores=8) == 3


@pytest.mark.slow
def test_plan_and_help_say_where_input_runs_without_tensorflow(tmp_path):
    from test_plan import NO_TF_RUNNER

    plan = subprocess.run([sys.executable, "-c", NO_TF_RUNNER, "mode=plan", "data.service=local",
                           "data.service_workers=3", f"hydra.run.dir={tmp_path}"], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert plan.returncode == 0 and "NO_TENSORFLOW" in plan.stdout, plan.stderr
    assert "input runs on the tf.data service (local)" in plan.stdout and "workers 3" in plan.stdout
    written = json.loads((tmp_path / "plan.json").read_text())["topology"]["input"]["where"]
    assert written["runs"] == "tf.data service" and written["workers"] == 3
    bad = cli("data.service=nowhere", f"hydra.run.dir={tmp_path / 'bad'}")
    assert bad.returncode == 2 and "data.service='nowhere'" in bad.stderr and "Traceback" not in bad.stderr
    assert "data.service" in cli("--help", check=True).stdout


# ------------------------------------------------------------------------- a real local service
@pytest.fixture(scope="module")
def service(tf, tmp_path_factory):
    """A real dispatcher and 2 workers (3 processes on 127.0.0.1) for the module's pipelines."""
    from scaleflow.data.service import for_run

    cfg = compose("data.service=local", "data.service_workers=2", "data.service_timeout_s=120")
    with for_run(cfg, str(tmp_path_factory.mktemp("svc"))) as target:
        yield target


CASES = [  # in memory (the gather runs on the workers), TFRecord file level, record level by key
    ("npz", dict(shard="hash", shard_key="group", uneven="drop")),
    ("tfrecord", dict(shard="sequential")),
    ("tfrecord", dict(shard="hash", shard_key="group")),
]


def _stream(fn, tf, pipeline: int, batches: int) -> list[list[int]]:
    it = iter(fn(tf.distribute.InputContext(2, pipeline, 2)))
    return [_ids(next(it)[0]) for _ in range(batches)]


@pytest.mark.slow
@pytest.mark.parametrize("kind,data", CASES, ids=[f"{k}-{'-'.join(map(str, d.values()))}" for k, d in CASES])
def test_each_pipeline_through_the_service_yields_exactly_its_in_process_batches(tf, tmp_path, service, kind, data):
    """Two pipelines (two workers of a multi-worker run), each its own job on the shared service."""
    from scaleflow.data.input import input_fn

    dataset, config, plan = _plan(kind, tmp_path, service="local", **data)  # as a run with the service plans
    for split, training in ((plan.train, True), (plan.validation, False)):
        local = input_fn(dataset, config, split, training=training, seed=config.seed)
        remote = input_fn(dataset, config, split, training=training, seed=config.seed, service=service)
        per_epoch = [[[], []] for _ in range(EPOCHS)]
        for p in range(2):
            expected = _stream(local, tf, p, EPOCHS * split.steps)
            decoded_here = []
            read, dataset.read = dataset.read, lambda *a, **k: decoded_here.append(1) or read(*a, **k)
            try:
                got = _stream(remote, tf, p, EPOCHS * split.steps)
            finally:
                dataset.read = read
            # TFRecord reads raw records and decodes on the service workers, after their shard.
            assert not decoded_here or kind != "tfrecord"
            assert got == expected, f"pipeline {p} ({'train' if training else 'validation'}) differs on the service"
            for e in range(EPOCHS):
                per_epoch[e][p] = sum(got[e * split.steps:(e + 1) * split.steps], [])
        _check_epochs(split, per_epoch)  # exactly the plan's records per epoch: none lost, none twice


@pytest.mark.slow
def test_joining_a_running_dispatcher_measures_its_workers_and_yields_the_same_batches(tf, tmp_path, service):
    """data.service=<host:port>: the module's service stands for a dispatcher someone else started."""
    from scaleflow.data.input import input_fn
    from scaleflow.data.service import for_run

    dataset, config, plan = _plan("tfrecord", tmp_path, service=service.address, shard="hash", shard_key="group")
    with for_run(compose(f"data.service=grpc://{service.address}"), str(tmp_path)) as joined:
        assert (joined.kind, joined.address, joined.workers, joined.pids) == ("remote", service.address, 2, ())
        assert joined.report()["dispatcher"] == service.address
        local = input_fn(dataset, config, plan.train, training=True, seed=config.seed)
        remote = input_fn(dataset, config, plan.train, training=True, seed=config.seed, service=joined)
        n = 2 * plan.train.steps
        assert _stream(remote, tf, 1, n) == _stream(local, tf, 1, n)
    assert all(_alive(p) for p in service.pids), "joining must never end someone else's service"


def _listening(pids) -> list[str]:
    """host:port of the TCP sockets in LISTEN state, in this network namespace, opened by `pids`."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address, port = fields[1].split(":")
                host = ".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)) if len(address) == 8 else address
                out.append(f"{host}:{int(port, 16)}")
    return out


@pytest.mark.slow
def test_the_local_service_listens_on_127_0_0_1_only(service):
    """TF 2.21's servers bind [::]: they run in a private network namespace, reached through a relay
    that listens on 127.0.0.1 here; no service process listens on any other address of this host."""
    if service.isolation.startswith("none"):
        pytest.skip(f"no private network namespace on this machine: {service.isolation}")
    listening = _listening(service.pids)
    assert listening and all(a.startswith("127.0.0.1:") for a in listening), listening
    assert service.address in listening


@pytest.mark.slow
def test_a_launcher_killed_with_sigkill_leaves_no_service_process(tmp_path):
    code = ("import sys, time\n"
            "from scaleflow.cluster.data_service import LocalService\n"
            "from scaleflow.cluster.netns import NetworkNamespace\n"
            "ns = NetworkNamespace.create()\n"
            "print('holder', ns.pid if ns else 0, flush=True)\n"
            "s = LocalService(1, sys.argv[1], 120, netns=ns).start()\n"
            "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    holder = int(proc.stdout.readline().split()[1])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (tmp_path / "pids").exists():  # written once all are spawned
        time.sleep(0.1)
    pids = [int(line.split()[1]) for line in (tmp_path / "pids").read_text().splitlines()] + ([holder] if holder else [])
    assert len(pids) >= 2 and all(_alive(p) for p in pids)
    proc.kill()  # while they start: the same guarantee holds at any moment of the run
    proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    assert not [p for p in pids if _alive(p)], "orphans after kill -9 of the launcher"


@pytest.mark.slow
def test_the_check_catches_a_duplicating_sharding_policy(tf, tmp_path, service):
    """Control: the same stream through ShardingPolicy.OFF (each worker yields everything) fails the
    comparison above, so that comparison would catch a service that duplicates or drops records."""
    svc = tf.data.experimental.service
    from scaleflow.data.input import input_fn

    dataset, config, plan = _plan("npz", tmp_path, shard="sequential")
    local = input_fn(dataset, config, plan.train, training=False, seed=config.seed)
    expected = _stream(local, tf, 0, EPOCHS * plan.train.steps)
    ds = local(tf.distribute.InputContext(2, 0, 2)).apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
    ds = ds.apply(svc.distribute(svc.ShardingPolicy.OFF, f"grpc://{service.address}", job_name=service.job("control", 0),
                                 consumer_index=0, num_consumers=1))  # read both workers in turn
    it = iter(ds)
    got = [_ids(next(it)[0]) for _ in range(EPOCHS * plan.train.steps)]
    seen = sum(got, [])
    assert got != expected and len(set(seen)) < len(seen), "OFF should have yielded duplicates here"


def test_a_pipeline_that_runs_python_is_refused_before_it_reaches_the_service(tf, tmp_path):
    """The TFRecord seek reader is tf.numpy_function: planned without the service it cannot be shipped."""
    from scaleflow.data.input import input_fn
    from scaleflow.data.service_config import ServiceTarget
    from scaleflow.errors import ScaleflowError

    dataset, config, plan = _plan("tfrecord", tmp_path, shard="hash", shard_key="group")
    assert plan.train.seek
    fn = input_fn(dataset, config, plan.train, training=True, seed=0,
                  service=ServiceTarget("remote", "127.0.0.1:1", 2, "scaleflow-test"))
    with pytest.raises(ScaleflowError, match="runs Python code.*data.service=off"):
        fn(tf.distribute.InputContext(2, 0, 2))


@pytest.mark.slow
def test_an_unreachable_dispatcher_is_a_clear_error_within_the_timeout(tf):
    from scaleflow.cluster.data_service import ServiceFailed
    from scaleflow.data.service import for_run
    from scaleflow.cluster.ports import free_ports

    port = free_ports(1)[0]  # nothing listens there
    cfg = compose(f"data.service=127.0.0.1:{port}", "data.service_timeout_s=2")
    started = time.monotonic()
    with pytest.raises(ServiceFailed, match=f"127.0.0.1:{port}.*within 2 s"):
        with for_run(cfg, "/tmp"):
            pass
    assert time.monotonic() - started < 10


# ------------------------------------------------------------------------- the CLI, end to end
def _pids(path: Path) -> list[int]:
    return [int(line.split()[1]) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_a_run_on_a_local_service_ends_it_on_sigterm_and_kill_9_and_resumes_with_a_fresh_one(tmp_path):
    """SIGTERM: the run stops at a step boundary (143, run.json interrupted) and ends its service.
    kill -9 of the trainer: its service dies with it. The next run resumes from the checkpoint on a
    fresh service (new dispatcher, new job names)."""
    run_dir = tmp_path / "run"
    pids_file = run_dir / "data_service" / "pids"
    args = ["data.service=local", "data.service_workers=1", "data.num_examples=512", "model.hidden_units=[16]",
            "trainer.steps_per_execution=1", "export=none", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

    def start(epochs: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "scaleflow", *args, f"trainer.epochs={epochs}"], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait_for(condition, proc, what: str) -> None:
        deadline = time.monotonic() + 180
        while not condition():
            assert proc.poll() is None and time.monotonic() < deadline, f"never saw {what}"
            time.sleep(0.2)

    first = start(200)
    wait_for(lambda: (run_dir / "run.json").exists() and
             (json.loads((run_dir / "run.json").read_text()).get("epochs_completed") or 0) >= 1, first, "an epoch")
    pids = _pids(pids_file)
    assert len(pids) >= 2 and all(_alive(p) for p in pids)  # (relay,) dispatcher, worker
    first.send_signal(signal.SIGTERM)
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 143, out
    assert not [p for p in pids if _alive(p)], "a service process outlived the run"
    interrupted = json.loads((run_dir / "run.json").read_text())
    assert interrupted["status"] == "interrupted"
    assert interrupted["data"]["input"]["runs"] == "tf.data service" and interrupted["data"]["input"]["workers"] == 1

    killed = start(200)  # its own service appears, then the trainer is killed with SIGKILL
    wait_for(lambda: _pids(pids_file) and set(_pids(pids_file)).isdisjoint(pids), killed, "a fresh service")
    again = _pids(pids_file)
    killed.kill()
    killed.communicate(timeout=60)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in again):
        time.sleep(0.2)
    assert not [p for p in again if _alive(p)], "kill -9 of the trainer left service processes behind"

    done = cli(*args, "trainer.epochs=2", cwd=tmp_path, check=True)
    final = json.loads((run_dir / "run.json").read_text())
    assert final["status"] == "ok" and final["resumed_from_epoch"] >= 1, done.stdout
    assert final["data"]["input"]["jobs"] != interrupted["data"]["input"]["jobs"]  # fresh jobs on a fresh service
    assert not [p for p in _pids(pids_file) if _alive(p)]


@pytest.mark.parametrize("kind,reader", [("parquet", "data=parquet"), ("csv", "a streamed CSV")])
def test_a_python_reader_with_a_service_is_a_config_error_before_anything_starts(tmp_path, kind, reader):
    """Parquet and the streamed CSV run Python (tf.numpy_function): refused at validation, not after
    the service's processes have started."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from scaleflow.errors import ConfigError
    from scaleflow.validation import validate

    table = pa.table({"a": np.arange(40, dtype="float32"), "b": np.ones(40, "float32"), "label": np.arange(40) % 2})
    path = tmp_path / f"d.{kind}"
    pq.write_table(table, path) if kind == "parquet" else pcsv.write_csv(table, path)
    overrides = [f"data={kind}", f"data.path={path}", "data.label_column=label", "data.service=local"]
    with pytest.raises(ConfigError, match=reader) as e:
        validate(compose(*overrides, *(["data.in_memory=false"] if kind == "csv" else [])))
    assert e.value.key == "data.service"
    if kind == "csv":  # read into memory, it can run on the service
        validate(compose(*overrides, "data.in_memory=true"))

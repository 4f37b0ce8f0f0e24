"""What a run tunes for speed (issue 14) is chosen from the hardware and the strategy, can be overridden
by documented keys checked before TensorFlow starts, and is recorded in run.json's `tuning` block:
TensorFlow's thread pools per process, steps per call, and the strategy's collective settings
(MultiWorkerMirrored gradient packing, Horovod fusion threshold and cycle time)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import QUICK, compose
from scaleflow.errors import ConfigError
from scaleflow.hardware import threads


def test_processes_sharing_a_host_share_its_cores_and_one_process_keeps_tensorflows_defaults():
    cfg = compose()
    two = threads.choose(cfg, local_processes=2, cores=2, environ={})
    assert (two["intra_op"], two["inter_op"]) == (1, 1)
    assert two["source"]["intra_op"] == "auto: 2 cores / 2 processes on this host"
    assert threads.choose(cfg, local_processes=2, cores=8, environ={})["intra_op"] == 4
    assert threads.choose(cfg, local_processes=4, cores=2, environ={})["intra_op"] == 1  # never 0 (= all cores)
    one = threads.choose(cfg, local_processes=1, cores=8, environ={})
    assert (one["intra_op"], one["inter_op"]) == (0, 0)  # 0: TensorFlow's default, every core


def test_a_config_key_beats_the_environment_which_beats_the_automatic_choice():
    cfg = compose("hardware.intra_op_threads=3")
    chosen = threads.choose(cfg, local_processes=2, cores=2, environ={"TF_NUM_INTEROP_THREADS": "5"})
    assert (chosen["intra_op"], chosen["inter_op"]) == (3, 5)
    assert chosen["source"] == {"intra_op": "hardware.intra_op_threads=3",
                                "inter_op": "TF_NUM_INTEROP_THREADS=5 in the environment"}


def test_each_strategy_says_how_many_of_its_processes_share_this_host():
    from scaleflow.cluster.tf_config import local_tf_config
    from scaleflow.strategies.multi_worker import MultiWorker
    from scaleflow_horovod.strategy import Horovod

    cfg = compose("strategy=multi_worker")
    three = json.dumps({"cluster": {"worker": ["a:1", "a:2", "b:1"]}, "task": {"type": "worker", "index": 1}})
    assert MultiWorker.local_processes(cfg, {"TF_CONFIG": three}) == 2  # a:1 and a:2
    assert MultiWorker.local_processes(cfg, {"TF_CONFIG": local_tf_config([1, 2], 0)}) == 2
    assert MultiWorker.local_processes(cfg, {}) == 2  # before the launch: the workers it starts here
    slurm = compose("strategy=multi_worker", "strategy.cluster=slurm")
    assert MultiWorker.local_processes(slurm, {"SLURM_TASKS_PER_NODE": "2(x3),1", "SLURM_NODEID": "3"}) == 1
    assert MultiWorker.local_processes(slurm, {"SLURM_TASKS_PER_NODE": "2(x3),1", "SLURM_NODEID": "1"}) == 2
    hvd = compose("strategy=horovod")
    assert Horovod.local_processes(hvd, {"HOROVOD_RANK": "1", "HOROVOD_LOCAL_SIZE": "2"}) == 2
    assert Horovod.local_processes(hvd, {}) == 1  # one rank: no launch
    assert Horovod.local_processes(compose("strategy=horovod", "strategy.num_workers=2"), {}) == 2  # before the launch
    assert Horovod.local_processes(compose("strategy=horovod", "strategy.hosts=[a:2,b:2]",
                                           "strategy.num_workers=4"), {}) == 1


def test_pinning_gives_each_process_on_a_host_its_own_block_of_cores_when_its_strategy_or_the_config_asks():
    pinned = compose("hardware.pin_processes=true")
    assert threads.choose(pinned, local_processes=2, cores=4, environ={}, local_rank=0)["cpus"] == [0, 1]
    second = threads.choose(pinned, local_processes=2, cores=4, environ={}, local_rank=1)
    assert second["cpus"] == [2, 3] and second["source"]["cpus"] == "hardware.pin_processes=true: place 1 of 2 on this host"
    assert threads.choose(pinned, local_processes=4, cores=2, environ={}, local_rank=3)["cpus"] == [1]  # more places than cores
    assert threads.choose(pinned, local_processes=1, cores=4, environ={}, local_rank=0)["cpus"] is None  # alone: every core
    assert threads.choose(pinned, local_processes=2, cores=4, environ={}, local_rank=None)["cpus"] is None  # place unknown
    # null: the strategy's choice; false beats it
    assert threads.choose(compose(), local_processes=2, cores=4, environ={}, local_rank=1)["cpus"] is None
    auto = threads.choose(compose(), local_processes=2, cores=4, environ={}, local_rank=1, pin_default=True)
    assert auto["cpus"] == [2, 3] and auto["source"]["cpus"].startswith("auto: the strategy pins")
    assert threads.choose(compose("hardware.pin_processes=false"), local_processes=2, cores=4, environ={},
                          local_rank=1, pin_default=True)["cpus"] is None


def test_multi_worker_pins_its_processes_and_horovod_does_not():
    from scaleflow.strategies.default import Default
    from scaleflow.strategies.multi_worker import MultiWorker
    from scaleflow.strategies.pipeline import Pipeline
    from scaleflow_horovod.strategy import Horovod

    assert MultiWorker.pins_processes(compose("strategy=multi_worker")) is True
    assert Horovod.pins_processes(compose("strategy=horovod")) is False  # its background thread needs a free core
    assert Pipeline.pins_processes(compose("strategy=pipeline", "strategy.data_parallel=multi_worker",
                                           "hardware.logical_devices=2")) is True
    assert Pipeline.pins_processes(compose("strategy=pipeline", "hardware.logical_devices=2")) is False
    assert Default.pins_processes(compose()) is False


def test_each_strategy_says_its_place_among_its_processes_on_this_host():
    from scaleflow.cluster.tf_config import local_tf_config
    from scaleflow.strategies.default import Default
    from scaleflow.strategies.multi_worker import MultiWorker
    from scaleflow_horovod.strategy import Horovod

    cfg = compose("strategy=multi_worker")
    cluster = {"cluster": {"worker": ["a:1", "b:1", "a:2", "b:2"]}}
    for index, place in ((0, 0), (1, 0), (2, 1), (3, 1)):
        environ = {"TF_CONFIG": json.dumps({**cluster, "task": {"type": "worker", "index": index}})}
        assert MultiWorker.local_rank(cfg, environ) == place
    assert MultiWorker.local_rank(cfg, {"TF_CONFIG": local_tf_config([1, 2], 1)}) == 1
    assert MultiWorker.local_rank(cfg, {}) is None  # the launcher itself trains nothing
    slurm = compose("strategy=multi_worker", "strategy.cluster=slurm")
    assert MultiWorker.local_rank(slurm, {"SLURM_LOCALID": "3"}) == 3
    hvd = compose("strategy=horovod")
    assert Horovod.local_rank(hvd, {"HOROVOD_RANK": "3", "HOROVOD_LOCAL_RANK": "1"}) == 1
    assert Horovod.local_rank(hvd, {}) is None
    assert Default.local_rank(compose(), {}) is None


def test_pin_moves_every_thread_the_process_has_and_the_threads_it_starts_later(tmp_path):
    probe = """
import os, threading, time
from scaleflow.hardware import threads
stop = threading.Event()
before = threading.Thread(target=stop.wait, daemon=True); before.start()  # a failure must not hang
cpus = threads.job_cpus()
threads.pin([0])
assert threads.job_cpus() == cpus  # the job's cores on this host, not this process's share
seen = {}
def report():
    seen["later"] = os.sched_getaffinity(0)
later = threading.Thread(target=report); later.start(); later.join()
allowed = {}
for t in os.listdir("/proc/self/task"):
    try:  # a joined thread can still be listed for a moment, then vanish
        allowed[t] = open(f"/proc/self/task/{t}/status").read().split("Cpus_allowed_list:")[1].split()[0]
    except FileNotFoundError:
        pass
stop.set(); before.join()
print(sorted(set(allowed.values())), len(allowed), sorted(seen["later"]), "tensorflow" in __import__("sys").modules)
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    pinned_to, threads_seen, later, tf_loaded = result.stdout.split()
    assert (pinned_to, later, tf_loaded) == ("['0']", "[0]", "False") and int(threads_seen) >= 2, result.stdout


def test_horovod_fusion_and_cycle_time_come_from_the_config_then_the_environment_then_the_automatic_choice():
    from scaleflow_horovod.strategy import collective_settings

    auto = collective_settings(compose("strategy=horovod"), {})
    assert auto["HOROVOD_FUSION_THRESHOLD"] == (128 << 20, "auto: Horovod's default")
    # CPU ranks poll every 0.1 ms: a small step's all-reduce would otherwise wait half of a 1 ms cycle
    assert auto["HOROVOD_CYCLE_TIME"][0] == 0.1 and "CPU ranks" in auto["HOROVOD_CYCLE_TIME"][1]
    assert collective_settings(compose("strategy=horovod", "hardware=gpu"), {})["HOROVOD_CYCLE_TIME"] == \
        (1.0, "auto: Horovod's default")
    assert collective_settings(compose("strategy=horovod"), {"HOROVOD_CYCLE_TIME": "2"})["HOROVOD_CYCLE_TIME"] == \
        ("2", "HOROVOD_CYCLE_TIME=2 in the environment")
    chosen = collective_settings(compose("strategy=horovod", "strategy.cycle_time_ms=0.5"),
                                 {"HOROVOD_FUSION_THRESHOLD": "1048576"})
    assert chosen["HOROVOD_CYCLE_TIME"] == (0.5, "strategy.cycle_time_ms=0.5")
    assert chosen["HOROVOD_FUSION_THRESHOLD"][0] == "1048576"


@pytest.mark.parametrize("override, key", [
    ("hardware.intra_op_threads=-1", "hardware.intra_op_threads"),
    ("hardware.inter_op_threads=many", "hardware.inter_op_threads"),
    ("strategy=multi_worker strategy.bytes_per_pack=-4", "strategy.bytes_per_pack"),
    ("strategy=horovod strategy.fusion_threshold_bytes=-1", "strategy.fusion_threshold_bytes"),
    ("strategy=horovod strategy.cycle_time_ms=0", "strategy.cycle_time_ms"),
    ("hardware.pin_processes=maybe", "hardware.pin_processes"),
])
def test_a_bad_tuning_value_is_a_config_error_naming_its_key(override, key):
    with pytest.raises(ConfigError) as info:
        compose(*override.split())
    assert str(info.value).startswith(key), str(info.value)


def test_a_yes_no_key_given_something_else_names_the_value_and_what_is_allowed():
    with pytest.raises(ConfigError) as info:
        compose("hardware.pin_processes=maybe")
    assert str(info.value).startswith("hardware.pin_processes='maybe'") and "true or false" in str(info.value)


def test_a_bad_tuning_value_exits_2_before_tensorflow_is_imported(tmp_path):
    probe = ("import sys\nfrom scaleflow.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
             "    print('EXIT', e.code, 'TF', 'tensorflow' in sys.modules, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", probe, "hardware.intra_op_threads=-2",
                             f"hydra.run.dir={tmp_path}"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "EXIT 2 TF False" in result.stderr, result.stderr[-2000:]
    assert "hardware.intra_op_threads=-2" in result.stderr


def test_a_run_records_what_it_tuned_and_why(tf, train):
    (tf.constant(1.0) + 1.0).numpy()  # TensorFlow initialised, as it is in any test that trained before
    manifest = train(*QUICK, "hardware.intra_op_threads=1", "trainer.steps_per_execution=4")
    tuning = manifest["tuning"]
    assert tuning["threads"]["intra_op"] == 1 and tuning["threads"]["source"]["intra_op"] == \
        "hardware.intra_op_threads=1"
    # This pytest process initialised TensorFlow already: the pools keep their sizes, and run.json says so.
    assert tuning["threads"]["applied"] is False and "already initialised" in tuning["threads"]["not_applied_reason"]
    from scaleflow.hardware.base import steps_per_execution

    assert tuning["steps_per_execution"]["value"] == steps_per_execution(4, manifest["data"]["train"]["steps"], "cpu")
    assert tuning["steps_per_execution"]["source"].startswith("trainer.steps_per_execution=4")
    assert tuning["collectives"] == {}  # one process: nothing to all-reduce


def test_steps_per_execution_above_one_is_accepted_under_multi_worker():
    assert compose("strategy=multi_worker", "trainer.steps_per_execution=8").trainer.steps_per_execution == 8

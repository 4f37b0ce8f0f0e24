"""mode=calibrate: measure this machine and write a hardware profile the planner can use.

Writes `<run dir>/hardware_profile.yaml` (a config file of the hardware group: copy it to
conf/hardware/<name>.yaml to select it with hardware=<name>, or pass it as plan.profile=<path>) and
`calibration.json` with every sample.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform

from scaleflow.manifest import atomic_write_json
from scaleflow.planning.calibration import (measure_allreduce, measure_compute, measure_step_overhead,
                                            measure_tf_collective)

log = logging.getLogger("scaleflow")


def run(cfg, run_dir: str) -> dict:
    os.makedirs(run_dir, exist_ok=True)
    print("calibrating: all-reduce between 2 processes on 127.0.0.1 (sockets, then TensorFlow collectives) ...",
          flush=True)
    socket_link = measure_allreduce()
    link = measure_tf_collective()
    print("calibrating: compute (a TensorFlow dense layers' forward + backward) and a Keras training step ...", flush=True)
    compute = measure_compute()
    step = measure_step_overhead(compute["peak_flops"])
    figures = {"peak_flops": compute["peak_flops"], "step_overhead_s": step["step_overhead_s"],
               "inter_host_bandwidth_bytes_s": link["bandwidth_bytes_s"],
               "inter_host_latency_s": link["latency_s"]}
    profile = os.path.join(run_dir, "hardware_profile.yaml")
    when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    lines = [
        f"# Hardware profile measured by `python -m scaleflow mode=calibrate` on {platform.node()} at {when}.",
        f"# compute: {compute['method']}; overhead: {step['method']};",
        f"# link between processes: {link['method']} on 127.0.0.1 (inter_host_*: the planner uses it",
        "# whenever replicas are in different processes; within a process the configured figures stay).",
        f"# Use: python -m scaleflow mode=plan plan.profile={profile}",
        "# or copy this file to conf/hardware/<name>.yaml and select it with hardware=<name>.",
        "defaults:", "  - /schema/hardware/cpu@_here_", "  - _self_",
        "name: cpu", f"logical_devices: {cfg.hardware.get('logical_devices', 1)}",
        *[f"{k}: {v:.6g}" for k, v in figures.items()], "precision: float32", "",
    ]
    with open(profile, "w") as f:
        f.write("\n".join(lines))
    result = {"figures": figures, "compute": compute, "step": step, "allreduce": link,
              "socket_allreduce": socket_link, "profile": profile}
    atomic_write_json(os.path.join(run_dir, "calibration.json"), result)
    print(f"compute {compute['peak_flops'] / 1e9:.3g} GFLOP/s, step overhead {step['step_overhead_s'] * 1e3:.3g} ms, "
          f"TF all-reduce {link['bandwidth_bytes_s'] / 1e9:.3g} GB/s, {link['latency_s'] * 1e6:.3g} us "
          f"(socket ring {socket_link['bandwidth_bytes_s'] / 1e9:.3g} GB/s, {socket_link['latency_s'] * 1e6:.3g} us)")
    print(f"hardware profile written to {profile}\nuse it: python -m scaleflow mode=plan plan.profile={profile}")
    return result

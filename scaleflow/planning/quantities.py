"""The seed model's four quantities of a distributed run, each with its inputs and meaning.

    P = N / B            data parallelism
    Q = M / T            model parallelism
    C = D x L / (B x W)  communication overhead
    L = T / N            load balance

N nodes (here: replicas), B global batch size, M parameters, T predicted training time (s),
D data size (bytes of the training records), L latency (s) and W bandwidth (bytes/s) of the slowest
link the gradient all-reduce crosses. (The model uses L twice: latency inside C, load balance as a
result; the report names them `latency_s` and `L`.)
"""

from __future__ import annotations


def _g(x: float) -> float:
    return float(f"{x:.6g}")


def quantities(*, nodes: int, batch: int, parameters: int, train_time_s: float, data_bytes: float,
               latency_s: float, bandwidth_bytes_s: float) -> dict:
    n, b, m, t, d = nodes, batch, parameters, train_time_s, data_bytes
    return {
        "P": {"formula": "N / B", "value": _g(n / b), "inputs": {"N": n, "B": b},
              "meaning": f"replicas per example of the global batch: each replica computes B/N = {b / n:g} "
                         "examples a step (P near 1 or above leaves replicas nearly idle)"},
        "Q": {"formula": "M / T", "value": _g(m / t) if t else None, "inputs": {"M": m, "T_s": _g(t)},
              "meaning": "parameters per second of training time: the model size each second must carry; "
                         "large when the model, not the data, is the thing to split"},
        "C": {"formula": "D x L / (B x W)", "value": _g(d * latency_s / (b * bandwidth_bytes_s)),
              "inputs": {"D_bytes": _g(d), "L_latency_s": latency_s, "B": b, "W_bytes_s": bandwidth_bytes_s},
              "meaning": "communication overhead: data volume times link latency per unit of batch and "
                         "bandwidth; grows with data and latency, shrinks with bigger batches and faster links"},
        "L": {"formula": "T / N", "value": _g(t / n), "inputs": {"T_s": _g(t), "N": n},
              "meaning": "load balance: predicted training seconds per replica (equal shards and steps "
                         "make every replica carry this same share)"},
    }

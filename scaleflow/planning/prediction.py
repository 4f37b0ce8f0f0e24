"""The planner's predicted step time beside the measured one, for run.json after every training run."""

from __future__ import annotations

import dataclasses
import logging

log = logging.getLogger("scaleflow")


def predicted_vs_measured(cfg, distribution, info, measured_step_time_s: float | None) -> dict:
    """{predicted_step_time_s, measured_step_time_s, ratio (measured / predicted), breakdown,
    predicted_memory_per_device}.

    The prediction uses the layout the run really had (its distribution's workers, replicas and
    pipelines). It never fails the run: a planner error is recorded instead.
    """
    from scaleflow import registry
    from scaleflow.planning.report import predicted_step, workload
    from scaleflow.planning.topology import figures, layout

    try:
        required = registry.get("hardware", cfg.hardware.name).required_strategy
        if required not in (None, distribution.name):
            # strategy.fallback ran on the host: predict for the CPU it ran on, not for the TPU it lacked
            from omegaconf import OmegaConf

            from scaleflow.config.schema import HardwareConfig

            cfg = OmegaConf.merge(OmegaConf.to_container(cfg), {"hardware": OmegaConf.to_container(
                OmegaConf.structured(HardwareConfig(name="cpu")))})
        figs = figures(cfg)
        lay = dataclasses.replace(layout(cfg, figs, distribution.name), workers=distribution.num_workers,
                                  replicas=distribution.num_replicas, pipelines=distribution.num_pipelines)
        work, _ = workload(cfg, info)
        step, memory = predicted_step(cfg, figs, lay, work, info)  # the model/pipeline split too, if any
    except Exception as e:  # noqa: BLE001 - a prediction must never fail a finished training run
        log.warning("could not predict the step time: %s", e)
        return {"predicted_step_time_s": None, "measured_step_time_s": measured_step_time_s, "ratio": None,
                "error": f"{type(e).__name__}: {e}"}
    total = step["total_s"]
    ratio = measured_step_time_s / total if measured_step_time_s else None
    if ratio is not None:
        log.info("step time: predicted %.3g ms, measured %.3g ms (measured/predicted %.2f)", total * 1e3,
                 measured_step_time_s * 1e3, ratio)
    return {"predicted_step_time_s": float(f"{total:.6g}"), "measured_step_time_s": measured_step_time_s,
            "ratio": None if ratio is None else round(ratio, 4), "breakdown": step,
            "figures": figs.source,
            # beside the strategy's measured bytes per device (model parallelism: run.json's strategy block)
            "predicted_memory_per_device": {k: memory[k] for k in (
                "parameters_bytes", "optimizer_bytes", "total_bytes", "ratio_vs_replicated", "fits")}}

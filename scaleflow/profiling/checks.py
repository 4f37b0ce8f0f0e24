"""Config rules of the profile group, checked before TensorFlow is imported."""

from __future__ import annotations

from scaleflow.errors import ConfigError


def check_profile_config(cfg) -> None:
    """profile.batches: [start, stop], 1 <= start <= stop, within the epoch (trainer.steps_per_epoch
    when set; else the planned epoch, checked once the data is planned: `check_window`)."""
    profile = cfg.profile
    batches = list(profile.batches)
    if len(batches) != 2 or not all(isinstance(b, int) and not isinstance(b, bool) for b in batches) \
            or not 1 <= batches[0] <= batches[1]:
        raise ConfigError("profile.batches", batches, "[start, stop] with 1 <= start <= stop",
                          "Steps are counted from 1 within the first epoch trained")
    if profile.name == "tensorboard" and cfg.trainer.get("steps_per_epoch"):
        check_window(batches, int(cfg.trainer.steps_per_epoch), "trainer.steps_per_epoch")
    if profile.get("timeline"):
        from scaleflow import registry

        writers = [n for n in registry.names("strategy") if registry.get("strategy", n).collective_timeline]
        if not registry.get("strategy", cfg.strategy.name).collective_timeline:
            raise ConfigError("profile.timeline", True, "false unless " + " or ".join(f"strategy={n}" for n in writers),
                              f"strategy={cfg.strategy.name} writes no timeline of its collectives")
    port = profile.get("port")
    if port is not None and cfg.get("mode", "train") == "train" and int(cfg.strategy.get("num_workers", 1) or 1) <= 1:
        from scaleflow.profiling.server import check_port_free

        check_port_free(int(port))  # a single process: known now; each worker checks its own port + i


def check_window(batches, steps_per_epoch: int, source: str = "the epoch") -> None:
    if batches[1] > steps_per_epoch:
        raise ConfigError("profile.batches", list(batches),
                          f"[start, stop] with stop <= {steps_per_epoch} (the steps of one epoch, {source})",
                          f"e.g. profile.batches=[{min(batches[0], steps_per_epoch)},{steps_per_epoch}]")

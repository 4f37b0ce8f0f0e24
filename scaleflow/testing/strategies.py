"""`StrategyTestSuite`: what every strategy plugin must do."""

from __future__ import annotations

from typing import ClassVar, Sequence

from scaleflow.testing.session import compose, train


class StrategyTestSuite:
    """Tests every strategy plugin passes. Subclass it as `Test<Something>` and set:

    Attributes:
        strategy: the option name (`strategy=<strategy>`).
        overrides: extra overrides for every config (e.g. `strategy.num_workers=2`).
        trains: False when the strategy cannot train inside the pytest process (it launches
            processes, or needs hardware that is absent).

    Example:
        class TestTwoCPUs(StrategyTestSuite):
            strategy = "two_cpus"
    """

    strategy: ClassVar[str]
    overrides: ClassVar[Sequence[str]] = ()
    trains: ClassVar[bool] = True
    quick: ClassVar[Sequence[str]] = ("data.num_examples=256", "trainer.epochs=1", "export=none",
                                      "trainer.verbose=quiet")

    def config(self, *extra: str):
        return compose(f"strategy={self.strategy}", *self.overrides, *extra)

    def cls(self):
        from scaleflow import registry

        return registry.get("strategy", self.strategy)

    def topology(self, cfg=None):
        from scaleflow.planning.topology import figures

        cfg = cfg if cfg is not None else self.config()
        return self.cls().topology(cfg, figures(cfg))

    def test_is_registered_as_a_strategy_under_its_name(self):
        from scaleflow.strategies.base import Strategy

        assert issubclass(self.cls(), Strategy) and self.cls().name == self.strategy

    def test_its_topology_is_consistent(self):
        t = self.topology()
        assert min(t.hosts, t.processes, t.replicas, t.pipelines, t.devices_per_replica) >= 1
        assert t.hosts <= t.processes or t.processes == 1  # one process may drive several hosts (TPU)
        assert t.replicas >= t.pipelines and t.replicas % t.pipelines == 0

    def test_its_parallelism_agrees_with_its_topology(self):
        from scaleflow.planning.topology import figures
        from scaleflow.strategies.base import Parallelism

        cfg = self.config()
        p, t = self.cls().parallelism(cfg, figures(cfg)), self.topology(cfg)
        assert isinstance(p, Parallelism)
        assert p.data == t.replicas and p.model * p.stages == t.devices_per_replica

    def test_its_claim_for_strategy_auto_is_a_claim_or_none(self):
        from scaleflow.strategies.base import Claim, Environment

        claim = self.cls().claim(self.config(), Environment())
        assert claim is None or (isinstance(claim, Claim) and claim.reason)

    def test_a_process_in_an_empty_environment_is_no_rank_of_a_job(self):
        # The command line locks the run dir as rank 0 then (`Strategy.process_rank`).
        assert self.cls().process_rank(self.config(), {}) is None

    def test_validation_applies_its_batch_rule(self):
        import pytest

        from scaleflow.errors import ConfigError

        rule = self.cls().batch_multiple(self.config())
        if rule is None or rule[0] <= 1:
            pytest.skip("no batch rule known before TensorFlow runs")
        with pytest.raises(ConfigError, match="data.batch_size"):
            self.config(f"data.batch_size={rule[0] * 8 + 1}")

    def test_mode_plan_plans_its_topology(self):
        from scaleflow.planning.report import build

        plan = build(self.config("mode=plan"))
        t = self.topology()
        assert (plan["topology"]["replicas"], plan["topology"]["pipelines"]) == (t.replicas, t.pipelines)

    def test_mode_shards_shards_over_its_pipelines(self, tmp_path):
        import json

        from scaleflow.modes import shards

        shards.run(self.config("mode=shards"), str(tmp_path))
        report = json.loads((tmp_path / "shards.json").read_text())
        assert len(report["pipelines"]["train"]) == self.topology().pipelines

    def test_it_trains(self, tmp_path):
        import pytest

        if not self.trains:
            pytest.skip(f"{type(self).__name__}.trains is False")
        run = train(tmp_path / "run", f"strategy={self.strategy}", *self.overrides, *self.quick)
        assert run["status"] == "ok" and run["strategy"]["num_replicas"] == self.topology().replicas

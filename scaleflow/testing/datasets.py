"""`DatasetTestSuite`: what every dataset plugin must do."""

from __future__ import annotations

from typing import ClassVar, Sequence

import numpy as np

from scaleflow.testing.session import compose, run_without_tensorflow, tensorflow_session


class DatasetTestSuite:
    """Tests every dataset plugin passes. Subclass it as `Test<Something>` and set:

    Attributes:
        dataset: the option name (`data=<dataset>`).
        overrides: extra overrides (e.g. `data.path=...`, a small `data.num_examples`).
        shard_key: a key `keys()` provides, to test `data.shard=hash` by key; None to skip.

    Example:
        class TestMoons(DatasetTestSuite):
            dataset = "moons"
            overrides = ("data.num_examples=300",)
    """

    dataset: ClassVar[str]
    overrides: ClassVar[Sequence[str]] = ()
    shard_key: ClassVar[str | None] = None

    def config(self, *extra: str):
        return compose(f"data={self.dataset}", *self.overrides, *extra)

    def plugin(self):
        from scaleflow import registry

        return registry.get("dataset", self.dataset)()

    def test_is_registered_as_a_dataset_under_its_name(self):
        from scaleflow import registry
        from scaleflow.data.base import Dataset

        cls = registry.get("dataset", self.dataset)
        assert issubclass(cls, Dataset) and cls.name == self.dataset

    def test_it_describes_itself_without_tensorflow(self):
        args = ", ".join(repr(o) for o in (f"data={self.dataset}", *self.overrides))
        out = run_without_tensorflow(
            "from scaleflow import registry\n"
            f"cfg = compose({args})\n"
            "info = registry.get('dataset', cfg.data.name)().describe(cfg.data)\n"
            "print(info.num_examples)")
        assert int(out.split()[-1]) > 0

    def test_it_reads_what_it_describes(self):
        tensorflow_session()
        cfg = self.config()
        info = self.plugin().describe(cfg.data)
        records = list(self.plugin().read(cfg.data).as_numpy_iterator())
        assert len(records) == info.num_examples
        assert sum(info.file_records) in (0, info.num_examples)
        features, label = records[0]
        assert tuple(np.shape(features)) == tuple(info.input_shape)
        labels = np.array([int(r[1]) for r in records])
        assert labels.min() >= 0 and labels.max() < info.num_classes

    def test_take_returns_the_records_at_the_indices(self):
        tensorflow_session()
        cfg = self.config()
        plugin = self.plugin()
        n = plugin.describe(cfg.data).num_examples
        indices = np.array(sorted({0, n // 2, n - 1}))
        everything = list(plugin.read(cfg.data).as_numpy_iterator())
        taken = list(plugin.take(cfg.data, indices).as_numpy_iterator())
        assert len(taken) == len(indices)
        for i, (features, label) in zip(indices, taken):
            np.testing.assert_allclose(features, everything[i][0])
            assert int(label) == int(everything[i][1])

    def test_the_shard_plan_partitions_its_records(self):
        from scaleflow.data.planning import plan_input

        extra = ("data.shard=hash", f"data.shard_key={self.shard_key}") if self.shard_key else ()
        cfg = self.config("data.batch_size=2", *extra)
        plugin = self.plugin()
        info = plugin.describe(cfg.data)
        plan = plan_input(plugin, cfg.data, info, 2, log_summary=False)
        splits = [plan.train] + ([plan.validation] if plan.validation is not None else [])
        ids = np.concatenate([s for split in splits for s in split.shards])
        assert len(ids) == len(np.unique(ids)) == info.num_examples  # each record once

    def test_keys_give_one_value_per_record(self):
        if self.shard_key is None:
            import pytest

            pytest.skip("no shard_key set for this dataset")
        cfg = self.config()
        keys = self.plugin().keys(cfg.data, self.shard_key)
        assert len(keys) == self.plugin().describe(cfg.data).num_examples

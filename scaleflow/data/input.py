"""From a shard plan to the tf.data pipeline each input pipeline trains on.

`input_fn` returns the function a strategy hands to `distribute_datasets_from_function`: each
pipeline reads exactly the records `scaleflow.data.planning.plan_input` assigned to it. TensorFlow is
imported inside the functions only.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import numpy as np

from scaleflow.data.base import Dataset
from scaleflow.data.service_config import ServiceTarget
from scaleflow.data.sharding import ShardPlan, records_of


def input_fn(dataset: Dataset, config, shard_plan: ShardPlan, *, training: bool, seed: int,
             initial_epoch: int = 0, service: ServiceTarget | None = None) -> Callable[[Any], Any]:
    """fn(input_context) -> per-replica batches of this pipeline's records, repeating forever, one
    epoch = `shard_plan.steps` steps. Training reshuffles the order every epoch (seeded); with
    `data.reshuffle_each_epoch` the pipeline's records themselves are redrawn every epoch.
    With `service` (data.service=local|<host:port>) the pipeline runs on that tf.data service
    (`through_service`) and yields exactly the same batches in the same order."""
    import tensorflow as tf

    def fn(ctx) -> Any:
        pipeline = ctx.input_pipeline_id if ctx is not None else 0
        if ctx is not None and ctx.num_input_pipelines != shard_plan.num_pipelines:
            from scaleflow.errors import ScaleflowError

            raise ScaleflowError(f"the strategy runs {ctx.num_input_pipelines} input pipelines but the shard "
                                 f"plan has {shard_plan.num_pipelines}")
        per_replica = ctx.get_per_replica_batch_size(config.batch_size) if ctx is not None else config.batch_size
        shuffle = training and config.shuffle_buffer > 0
        need = shard_plan.steps * shard_plan.batch_per_pipeline
        per_epoch = shard_plan.repartition is not None

        def epoch_records(epoch) -> np.ndarray:
            return shard_plan.for_epoch(int(epoch)).epoch_records[pipeline].astype(np.int64)

        if dataset.in_memory:
            # In memory: gather this pipeline's candidates once, then index whole batches per epoch.
            candidates = np.unique(np.concatenate(shard_plan.shards)) if per_epoch else \
                shard_plan.kept_ids(pipeline)
            x, y = dataset.gather_arrays(config, candidates)
            if service is not None and x.nbytes + y.nbytes > MAX_SHIPPED_BYTES:
                from scaleflow.errors import ScaleflowError

                raise ScaleflowError(f"data.service: this pipeline's in-memory records ({(x.nbytes + y.nbytes) / 2**30:.1f} "
                                     "GiB) travel inside the pipeline's graph, which TensorFlow limits to 2 GiB; use "
                                     "data.service=off, or file-backed data (e.g. data=tfrecord)")
            x, y = tf.constant(x), tf.constant(y)
            fixed = tf.constant(np.searchsorted(candidates, shard_plan.epoch_records[pipeline]), tf.int64)

            def positions(epoch):
                if not per_epoch:
                    return fixed
                ids = tf.numpy_function(epoch_records, [epoch], tf.int64, stateful=False)
                return tf.reshape(tf.searchsorted(tf.constant(candidates, tf.int64), ids), [need])

            def epoch_batches(epoch):
                order = positions(epoch)
                if shuffle:
                    order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([seed + pipeline, epoch]))
                return tf.data.Dataset.from_tensor_slices(tf.reshape(order, [-1, per_replica]))

            ds = tf.data.Dataset.range(initial_epoch, 2**62).flat_map(epoch_batches)

            def post(i):  # the work after the batch order is known: split over service workers
                return tf.gather(x, i), tf.gather(y, i)
        else:
            def finish(one_epoch, epoch=None):
                # Shuffle within the epoch only, so every epoch holds exactly the plan's records.
                if shuffle:
                    one_epoch = one_epoch.shuffle(min(config.shuffle_buffer, max(1, need)),
                                                  seed=seed + 7919 * pipeline if epoch is None else None,
                                                  reshuffle_each_iteration=True)
                return one_epoch.batch(per_replica, drop_remainder=True)

            # On the service, a source that can split reading from decoding (`Dataset.read_raw`) batches
            # its raw records here and decodes after the shard: each service worker decodes only its
            # batches, instead of all of them (the same records, in the same order, either way).
            seeks = shard_plan.seek and shard_plan.level == "record"  # read_records: decoded already (and Python)
            split = dataset.read_raw(config) if service is not None and shard_plan.files and not seeks else None
            read = (lambda files: split[0](files)) if split else (lambda files: dataset.read(config, files=files))
            ds = _file_pipeline(dataset, config, shard_plan, pipeline, initial_epoch, epoch_records, finish, read,
                                selectable=split is None)
            post = split[1] if split else None
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        # Seeded shuffles only reproduce if parallel stages keep their order (the cost is negligible:
        # in-memory elements are whole batches).
        options.deterministic = True
        if service is not None:
            ds = through_service(ds.with_options(options), post, service,
                                 service.job("train" if training else "validation", pipeline))
        elif post is not None:
            ds = ds.map(post, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.with_options(options).prefetch(tf.data.AUTOTUNE)

    return fn


def through_service(stream: Any, post: Callable[[Any], Any] | None, service: ServiceTarget, job: str) -> Any:
    """`stream` (this pipeline's infinite sequence of elements, `post` applied to each) computed on the
    tf.data service, yielding exactly what the in-process pipeline yields, in the same order.

    Element i of the stream goes to service worker i mod N: scaleflow places the static shard op itself
    (`shard(SHARD_HINT, SHARD_HINT)`, ShardingPolicy.HINT: the dispatcher's fixed worker list makes it
    shard(N, k)), so the partition is exact by construction; TensorFlow's OFF (every worker yields
    everything: duplicates) and DYNAMIC (at-most-once: losses after a worker restart) are never used.
    Each worker yields its elements in order, but the service interleaves workers as they answer
    (round-robin reads skip a worker that is not ready), so elements carry their stream position and
    `_in_stream_order` puts them back in order before training sees them.
    `stream` and `post` must be serialisable (no Python functions): the service runs them elsewhere.
    """
    import tensorflow as tf

    svc = tf.data.experimental.service
    job = f"{job}-{next(_jobs)}"  # one consumer per job: a job name is never read twice, even by a rebuilt pipeline
    ds = stream.enumerate().shard(tf.data.experimental.SHARD_HINT, tf.data.experimental.SHARD_HINT)
    if post is not None:
        ds = ds.map(lambda i, element: (i, post(element)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # Round-robin reads need an infinite dataset, which the pipeline is (it repeats forever).
    ds = ds.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
    _check_serialisable(ds, job)
    ds = ds.apply(svc.distribute(svc.ShardingPolicy.HINT, f"grpc://{service.address}", job_name=job,
                                 consumer_index=0, num_consumers=1))
    if int(service.workers) == 1:
        return ds.map(lambda i, element: element)
    return _in_stream_order(ds, int(service.workers), job)


_jobs = itertools.count()
MAX_SHIPPED_BYTES = 1_500_000_000  # in-memory arrays shipped to the service in the graph (protobuf: < 2 GiB)
_PYTHON_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


def _check_serialisable(ds: Any, job: str) -> None:
    """A pipeline that calls Python (tf.numpy_function, from_generator: streamed CSV, Parquet, the
    TFRecord seek reader, data.reshuffle_each_epoch) cannot run on a service worker, which would fail
    with an obscure error at the first batch: say so now, naming the way out."""
    from tensorflow.core.framework import graph_pb2

    graph = graph_pb2.GraphDef()
    graph.ParseFromString(ds._as_serialized_graph().numpy())  # noqa: SLF001 - the graph the service would get
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    if ops & _PYTHON_OPS:
        from scaleflow.errors import ScaleflowError

        raise ScaleflowError(f"data.service: this input pipeline runs Python code ({', '.join(sorted(ops & _PYTHON_OPS))}: "
                             "a streamed CSV or Parquet reader, or tf.numpy_function), which a tf.data service worker "
                             f"cannot run (job {job}); use data.service=off for this dataset")
REORDER_CAPACITY = 64  # elements held per service worker while waiting for a late one


def _in_stream_order(ds: Any, workers: int, job: str) -> Any:
    """The elements of `ds` ((position, element) pairs, each worker's in order) in position order.
    Holds at most REORDER_CAPACITY x workers elements: a worker that falls further behind (dead or
    stuck) stops the run with its name rather than blocking it or training out of order."""
    import tensorflow as tf

    spec = ds.element_spec[1]
    capacity = REORDER_CAPACITY * workers

    def ordered():
        pending, want = {}, 0
        for position, element in ds:
            pending[int(position)] = element
            while want in pending:
                yield pending.pop(want)
                want += 1
            if len(pending) > capacity:
                raise RuntimeError(f"data.service job {job}: service worker {want % workers} (of {workers}) has not "
                                   f"delivered element {want} while {len(pending)} later ones arrived; it is stuck or "
                                   "gone")

    return tf.data.Dataset.from_generator(ordered, output_signature=spec)


def _file_pipeline(dataset: Dataset, config, plan: ShardPlan, pipeline: int, initial_epoch: int,
                   epoch_records: Callable[[int], np.ndarray], finish: Callable[..., Any],
                   read: Callable[[list], Any] | None = None, selectable: bool = True) -> Any:
    """One epoch of this pipeline's records from a file-backed source, repeated: open only the files
    the plan lists for this pipeline, keep its records (record level), then cycle or trim to the
    evened epoch. Records come in global id order, so `np.resize`/truncation in `even` match exactly."""
    import tensorflow as tf

    read = read or (lambda files: dataset.read(config, files=files))
    need = plan.steps * plan.batch_per_pipeline
    if not plan.files and plan.repartition is None:  # no files, no gather_arrays: the dataset's own take
        mine = plan.kept_ids(pipeline)
        return finish(_evened(dataset.take(config, mine), len(mine), need, _cache(plan, config))).repeat()
    if not plan.files:  # a new partition every epoch (data.reshuffle_each_epoch): filter a whole read
        total = int(plan.source_records)
        ds = dataset.read(config)

        def keep_all(epoch) -> np.ndarray:
            mask = np.zeros(total, dtype=bool)
            mask[np.unique(epoch_records(epoch))] = True
            return mask

        def reshuffled(epoch):
            keep_t = tf.reshape(tf.numpy_function(keep_all, [epoch], tf.bool, stateful=False), [total])
            return finish(_keep(ds, keep_t).repeat().take(need), epoch)

        return tf.data.Dataset.range(initial_epoch, 2**62).flat_map(reshuffled)
    opened = np.asarray(plan.reads[pipeline], dtype=np.int64)
    if plan.level == "file":  # its own files, whole
        ds = read([plan.files[f] for f in opened])
        return finish(_evened(ds, len(plan.shards[pipeline]), need, _cache(plan, config))).repeat()
    if plan.seek and plan.repartition is None:  # the source reads its records by offset: only ours
        mine = plan.kept_ids(pipeline)
        starts = np.concatenate([[0], np.cumsum(np.asarray(plan.file_records, dtype=np.int64))])
        owner = np.searchsorted(starts, mine, side="right") - 1
        opened = np.unique(owner)
        ds = dataset.read_records(config, [plan.files[f] for f in opened],
                                  [mine[owner == f] - starts[f] for f in opened])
        return finish(_evened(ds, len(mine), need, _cache(plan, config))).repeat()
    ds = read([plan.files[f] for f in opened])
    all_ids = records_of(opened, plan.file_records)  # global id of each record the opened files hold
    if plan.repartition is None:
        mine = plan.kept_ids(pipeline)
        keep = np.zeros(len(all_ids), dtype=bool)
        keep[np.searchsorted(all_ids, mine)] = True
        # A reader that can skip what this pipeline does not keep (row groups, blocks of lines) does.
        selected = dataset.read_selected(config, [plan.files[f] for f in opened], keep) if selectable else None
        kept = selected if selected is not None else _keep(ds, tf.constant(keep))
        return finish(_evened(kept, len(mine), need, _cache(plan, config))).repeat()

    # A new partition every epoch: each epoch filters the opened files again (no cache).
    def keep_mask(epoch) -> np.ndarray:
        mask = np.zeros(len(all_ids), dtype=bool)
        mask[np.searchsorted(all_ids, np.unique(epoch_records(epoch)))] = True
        return mask

    def one_epoch(epoch):
        keep_t = tf.reshape(tf.numpy_function(keep_mask, [epoch], tf.bool, stateful=False), [len(all_ids)])
        mine = _keep(ds, keep_t)
        return finish(mine.repeat().take(need), epoch)

    return tf.data.Dataset.range(initial_epoch, 2**62).flat_map(one_epoch)


def _cache(plan: ShardPlan, config) -> bool:
    return plan.cache if plan.cache is not None else bool(config.cache)


CACHE_BATCH = 1024


def _cached(ds: Any) -> Any:
    """`ds` held in memory as batches of CACHE_BATCH records: one tensor per batch and feature, not per
    record (a cached record costs its bytes, not hundreds of bytes of tensor bookkeeping)."""
    return ds.batch(CACHE_BATCH).cache().unbatch()


def _evened(ds: Any, available: int, need: int, cache: bool) -> Any:
    """One evened epoch from `ds`, which yields `available` records in global id order: its first
    `need` (drop) or `need` cycling through them (repeat), as `sharding.even` decided. Cached after
    trimming, so a partly read dataset is never cached."""
    if need <= available:
        ds = ds.take(need)
        return _cached(ds) if cache else ds
    ds = _cached(ds) if cache else ds
    return ds.repeat().take(need)


def _keep(ds: Any, keep: Any) -> Any:
    """The records of `ds` whose position is True in the boolean vector `keep`."""
    import tensorflow as tf

    def kept(position, record):
        return tf.gather(keep, position)

    def strip(position, record):
        return record

    return ds.enumerate().filter(kept).map(strip)


def validation_records(dataset, config, plan, input_shape=None, limit: int = 10_000,
                        max_bytes: int = 256 << 20):
    """(features, labels) of the validation split (all pipelines' shards; at most `limit` records and
    about `max_bytes` of float32 features, so images stay bounded), on which exports are evaluated
    (edge accuracy, promotion); None without a validation split."""
    import tensorflow as tf

    if plan.validation is None:
        return None
    if input_shape:
        limit = max(1, min(limit, max_bytes // (4 * int(np.prod(input_shape)))))
    indices = np.unique(np.concatenate([np.asarray(s) for s in plan.validation.shards]))[:limit]
    if not len(indices):
        return None
    x, y = next(iter(dataset.take(config, indices).batch(len(indices))))
    return tf.cast(x, tf.float32).numpy(), np.asarray(y)

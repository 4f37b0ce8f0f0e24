"""One training run, from a validated config to a trained, exported model and run.json.

Read `run` top to bottom: it is the whole job, each step one call deep.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback

import numpy as np

from scaleflow import profiling, registry, tasks, tf_logging
from scaleflow.data import service as data_service
from scaleflow.data import service_config
from scaleflow.data.input import input_fn, validation_records
from scaleflow.data.planning import plan_input
from scaleflow.export.base import ExportRequest
from scaleflow.export import seal
from scaleflow.export.metadata import export_metadata
from scaleflow.export.target import check_export_target, clean_stale_staging, export_root
from scaleflow.hardware.base import describe_steps_per_execution, steps_per_execution
from scaleflow.hardware import threads
from scaleflow.manifest import Manifest
from scaleflow.security import audit, checkpoints
from scaleflow.security.redact import recorded_config
from scaleflow.signals import StopRequest, stop_on_signal, stop_requests
from scaleflow.tracking.base import follow_with_logger
from scaleflow.training import setup
from scaleflow.training.non_finite import stop_on_non_finite_loss
from scaleflow.training.callbacks import epoch_logger, manifest_history, tensorboard_callback
from scaleflow.training.controls import Controls, optimizer_options

log = logging.getLogger("scaleflow")


def run(cfg, run_dir: str, strategy=None) -> dict:
    """Train `cfg` in `run_dir` (under `strategy`, default: the config's); returns the final metrics.
    Raises on failure, and run.json says why, whichever step failed."""
    started = time.perf_counter()
    os.makedirs(run_dir, exist_ok=True)
    tf_logging.import_tensorflow(cfg.trainer.verbose)  # without its C++ start-up info lines
    strategy = strategy or registry.get("strategy", cfg.strategy.name)()
    check_export_target(cfg, run_dir)  # a model that could not be written is never trained
    with stop_requests() as stop:  # SIGTERM/SIGINT: finish the step, keep the checkpoint, exit 143/130
        writer = strategy.is_writer(cfg)  # known before TensorFlow: a failed set-up is recorded too
        manifest = Manifest(run_dir, recorded_config(cfg), enabled=writer)  # secrets: ***
        audited = audit.run_events(cfg, run_dir, manifest, enabled=writer)  # who ran what
        try:
            # 1. Thread pools sized to this process's share of the cores, then join the peers, then the
            #    hardware: all before TensorFlow runs any op.
            share = threads.choose(cfg, strategy.local_processes(cfg, os.environ),
                                   local_rank=strategy.local_rank(cfg, os.environ),
                                   pin_default=strategy.pins_processes(cfg))
            tuning = {"threads": threads.apply(share)}
            strategy.join(cfg)
            hardware = registry.get("hardware", cfg.hardware.name)().configure(cfg)
            distribution = strategy.create(cfg)
            stop.rearm()  # TensorFlow's cluster runtime may have replaced the SIGTERM handler
            if distribution.is_chief:
                clean_stale_staging(export_root(cfg, run_dir))  # left by an export killed mid-way
                follow_with_logger(cfg, run_dir, manifest)  # logger=mlflow, ...: mirrors run.json
            # Resources that live exactly as long as training (the tf.data service of data.service=local).
            with distribution.active(), contextlib.ExitStack() as resources:
                result = _train(cfg, run_dir, distribution, hardware, manifest, stop, resources, tuning)
        except BaseException as e:
            interrupted = stop.interruption(e)
            if interrupted is None:
                manifest.update(error_traceback=traceback.format_exc(limit=20),
                                **({"failed_at": e.at} if isinstance(getattr(e, "at", None), dict) else {}))
                manifest.finish("failed", error=f"{type(e).__name__}: {e}")
                audited.end(manifest.data)
                raise
            manifest.update(resume_command=interrupted.resume)
            manifest.finish("interrupted", error=str(interrupted))
            audited.end(manifest.data)
            log.warning("%s", interrupted)
            raise interrupted from None
    manifest.update(duration_s=round(time.perf_counter() - started, 3))
    manifest.finish("ok")
    audited.end(manifest.data)
    return result


def _train(cfg, run_dir: str, distribution, hardware: dict, manifest: Manifest, stop: StopRequest,
           resources: contextlib.ExitStack, tuning: dict) -> dict:
    import keras

    t = cfg.trainer
    setup.seed_everything(t.seed)
    policy = setup.set_precision(t.mixed_precision)
    strategy_info = {**distribution.describe(), **hardware}
    manifest.update(strategy=strategy_info)
    log.info("strategy %s: %d worker(s), %d replica(s), %d input pipeline(s)", distribution.name,
             distribution.num_workers, distribution.num_replicas, distribution.num_pipelines)

    # 2. Data: describe (no TF), plan the exact shard of every pipeline, build this pipeline's input.
    task = tasks.get(cfg)  # what is predicted: labels, head, loss, metrics, export outputs
    dataset = registry.get("dataset", cfg.data.name)(task=task)
    info = dataset.describe(cfg.data)
    plan = plan_input(dataset, cfg.data, info, distribution.num_pipelines)
    steps = t.steps_per_epoch or plan.train.steps
    # data.service: where the pipelines run (in this process, or a tf.data service started or joined
    # now and ended with the run); the batches are the same either way.
    service = resources.enter_context(data_service.for_run(
        cfg, run_dir, info.files, log_dir=data_service.log_dir(run_dir, distribution.worker_index),
        on_failure=lambda message: manifest.finish("failed", error=message.splitlines()[0])))
    manifest.update(task=task.name, data={**plan.report(), "name": cfg.data.name, "input_shape": list(info.input_shape),
                                          "input": service.report(distribution.num_workers) if service
                                          else service_config.describe(cfg),
                                          "num_classes": info.num_classes, "class_names": list(info.class_names),
                                          "target_names": list(info.target_names),
                                          **({"encoding": info.extra["report"]} if "report" in info.extra else {}),
                                          # which reader ran (csv: in_memory | streaming, and why; parquet)
                                          **({"reader": info.extra["reader"]} if "reader" in info.extra else {})})
    log.info("data %s: %d records (%s), %d train steps/epoch of %d", cfg.data.name, info.num_examples,
             info.fingerprint, steps, cfg.data.batch_size)

    # 3. Resume: an interrupted run in this run dir continues from its last completed epoch; one
    # that trained every epoch but failed after (e.g. in the export) goes straight to the export.
    # trainer.encrypt_checkpoints: Keras works on a RAM copy, the disk holds only ciphertext.
    backup, encrypted_backup = checkpoints.prepare(setup.backup_dir(run_dir, distribution.worker_index), cfg)
    initial_epoch = setup.prepare_resume(backup, t.resume)
    if initial_epoch >= t.epochs:
        log.info("training finished in an earlier attempt (%d/%d epochs, checkpoint in %s): restoring it "
                 "and going straight to the export", initial_epoch, t.epochs, backup)
    elif initial_epoch:
        log.info("resuming from epoch %d/%d (checkpoint in %s)", initial_epoch, t.epochs, backup)
    manifest.update(resumed_from_epoch=initial_epoch or None)
    # Early stopping / keep_best: their state lives beside the checkpoint and resumes with it.
    controls = Controls.from_config(cfg, backup, task)
    if controls is not None:
        controls.resume(initial_epoch)

    train_ds = distribution.distribute(input_fn(dataset, cfg.data, plan.train, training=True,
                                                seed=cfg.data.seed, initial_epoch=initial_epoch, service=service))
    val_ds = None
    if plan.validation is not None:
        val_ds = distribution.distribute(input_fn(dataset, cfg.data, plan.validation, training=False,
                                                  seed=cfg.data.seed, service=service))

    # 4. Model, optimizer and compile, under the strategy's scope.
    spec = task.input_spec(info)
    model_plugin = registry.get("model", cfg.model.name)()
    # Some strategies cannot run several steps per call (Keras 3.15 under MultiWorkerMirrored).
    spe = steps_per_execution(t.steps_per_execution, steps, cfg.hardware.name,
                              cap=distribution.max_steps_per_execution)
    with distribution.scope():
        model = task.build_model(model_plugin, cfg.model, spec)  # the plugin's body, the task's head
        model = distribution.prepare_model(model)  # e.g. cut into stages over devices (pipeline)
        optimizer = distribution.wrap_optimizer(setup.make_optimizer(t, optimizer_options(t, steps)))
        jit = distribution.jit_compile if distribution.jit_compile is not None else t.jit_compile
        loss, metrics = task.compile_args(t, spec)
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics, steps_per_execution=spe, jit_compile=jit)
    log.info("model %s: %s parameters, precision %s, steps_per_execution %d", cfg.model.name,
             f"{model.count_params():,}", policy, spe)
    strategy_info.update(distribution.placement(model))  # where the variables went (model parallelism)
    manifest.update(strategy=strategy_info)
    # What was tuned for speed, and why (threads, steps per call, the strategy's collectives).
    tuning.update(steps_per_execution=describe_steps_per_execution(
        t.steps_per_execution, spe, steps, cfg.hardware.name, distribution.max_steps_per_execution),
        collectives=distribution.tuning())
    manifest.update(tuning=tuning)
    log.info("tuning: %s; steps_per_execution %d (%s)%s", threads.describe(tuning["threads"]), spe,
             tuning["steps_per_execution"]["source"],
             "".join(f"; {k} {v}" for k, v in tuning["collectives"].items() if not k.endswith("_source")))

    # 5. Fit.
    throughput = registry.get("callback", "throughput").create(cfg, run_dir, distribution,
                                                              cfg.data.batch_size, steps)
    callbacks = [
        # Before the backup: run.json's history must never lag behind the epoch a resume starts from.
        manifest_history(manifest, initial_epoch),
        # Before the backup too: the controls' state of an epoch is on disk before its checkpoint.
        *([controls.callback()] if controls is not None else []),
        # double_checkpoint keeps the previous epoch's files: a kill mid-save can still resume. The
        # checkpoint outlives fit: it is deleted only once the export is verified and in place.
        keras.callbacks.BackupAndRestore(backup, save_freq="epoch", delete_checkpoint=False,
                                         double_checkpoint=True),
        *([encrypted_backup.callback()] if encrypted_backup else []),  # after the save it encrypts
        stop_on_signal(stop),
        *([stop_on_non_finite_loss(spe)] if t.on_nan == "stop" else []),
        tensorboard_callback(cfg, run_dir, distribution),
        *profiling.callbacks(cfg, run_dir, distribution, manifest, steps, initial_epoch),  # profile=...
        throughput,
        *distribution.callbacks(),
        *[registry.get("callback", name).create(cfg, run_dir, distribution, cfg.data.batch_size, steps)
          for name in cfg.trainer.get("callbacks", [])],
    ]
    if t.verbose in ("line", "debug"):
        callbacks.append(epoch_logger(t.epochs, throughput))
    # An early-stopped run that failed later (e.g. in the export) has no epoch left to run.
    epochs = initial_epoch if controls is not None and controls.already_stopped else t.epochs
    try:
        history = model.fit(train_ds, epochs=epochs, steps_per_epoch=steps, validation_data=val_ds,
                            validation_steps=plan.validation.steps if plan.validation else None,
                            callbacks=callbacks, verbose=1 if t.verbose == "progress" else 0, shuffle=False)
    except Exception as e:  # a bad record found mid-epoch: name its file instead of TensorFlow's trace
        explained = dataset.explain_read_error(cfg.data, e) or data_service.explain_failure(e, service)
        if explained is None:
            raise
        raise explained from None
    final = {k: float(v[-1]) for k, v in history.history.items() if v} or \
        dict((manifest.data.get("metrics") or {}).get("final") or {})  # no epoch left to run
    if controls is not None:
        manifest.update(training_controls=controls.summary())
    from scaleflow.planning.prediction import predicted_vs_measured  # the planner's view, for run.json

    measured = throughput.summary()
    if measured.get("epochs_measured") or not initial_epoch:
        manifest.update(throughput=measured,
                        step_time=predicted_vs_measured(cfg, distribution, info, measured.get("step_time_s")))
    else:  # nothing was measured in this attempt: keep the earlier attempt's figures
        manifest.update(throughput=manifest.previous.get("throughput"), step_time=manifest.previous.get("step_time"))
    stop.check("after training, before the export")

    # 6. Export and verify (only the chief writes the real path); run.json's `model` is the identity
    #    the registry, the server and the audit log share.
    request = ExportRequest(model=model, cfg=cfg, run_dir=run_dir, sample=_sample_batch(dataset, cfg.data, plan),
                            identity={"run_dir": os.path.abspath(run_dir), "config_hash": manifest.config_hash,
                                      "data_fingerprint": info.fingerprint},
                            metadata=export_metadata(cfg, info, _records(dataset, cfg.data, plan.train.shards[0], 2048)),
                            is_chief=distribution.is_chief,
                            representative=_calibration_records(dataset, cfg, plan),
                            validation=validation_records(dataset, cfg.data, plan, info.input_shape)
                            if distribution.is_chief else None)
    with setup.kept_for_a_rerun(backup):  # an export failure says how to export without retraining
        exported = registry.get("exporter", cfg.export.format)().export(request)
    manifest.update(export=exported, model=exported.get("identity") or manifest.data["model"])
    if distribution.is_chief and cfg.export.get("seal"):  # export.seal: an encrypted archive for transport
        exported["sealed"] = seal.seal_if_requested(cfg, exported)
        manifest.update(export=exported)
    setup.discard_backup(backup)  # the model is safe in the export: nothing left to resume
    # 7. Promotion: the verified export becomes `stable` or `canary` in labels.json (scaleflow/deploy).
    if distribution.is_chief and exported.get("dir"):
        from scaleflow.deploy.promote import promote_after_training

        manifest.update(export={**exported, "promotion": promote_after_training(cfg, exported, request)})
    if encrypted_backup:
        setup.discard_backup(encrypted_backup.backup_dir)
        encrypted_backup.close()
    setup.set_precision("off")
    return final


def _sample_batch(dataset, config, plan, size: int = 64) -> np.ndarray:
    """A few real inputs to compare the export against the trained model."""
    source = plan.validation.shards[0] if plan.validation is not None and len(plan.validation.shards[0]) \
        else plan.train.shards[0]
    return _records(dataset, config, source, size)


def _calibration_records(dataset, cfg, plan) -> np.ndarray | None:
    """`export.calibration_samples` records drawn at random (seeded) from this run's training shard,
    for exporters that calibrate (int8 quantization); None when the exporter does not ask for them."""
    if cfg.export.get("quantize", "none") != "int8":
        return None
    shard = np.asarray(plan.train.shards[0])
    size = min(int(cfg.export.calibration_samples), len(shard))
    chosen = np.random.default_rng(cfg.data.seed).choice(shard, size, replace=False) if size else shard[:0]
    return _records(dataset, cfg.data, chosen, size) if size else None


def _records(dataset, config, indices, size: int = 64) -> np.ndarray:
    """The features of the first `size` of `indices` (in index order), as float32."""
    import tensorflow as tf

    indices = np.sort(np.asarray(indices)[:size])
    x, _ = next(iter(dataset.take(config, indices).batch(len(indices))))
    return tf.cast(x, tf.float32).numpy()

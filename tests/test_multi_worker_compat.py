"""The Keras 3.15 fixes for MultiWorkerMirroredStrategy: still needed, still working, version-guarded.

If a Keras upgrade fixes either bug, the unpatched stages stop failing and this test fails: remove the
fix (or narrow `NEEDS_FIXES`) in scaleflow/compat/keras_mwms.py. If an upgrade breaks the fixes, the
patched stage fails.
"""

from __future__ import annotations

import pytest

from mwms_probe import probe_cluster
from scaleflow.compat import keras_mwms


def test_fixes_are_guarded_to_the_keras_versions_measured_to_need_them():
    assert keras_mwms.needed((3, 15))
    assert not keras_mwms.needed((3, 16)) and not keras_mwms.needed((2, 15))


@pytest.mark.slow
def test_each_fix_is_needed_and_all_make_fit_evaluate_predict_and_several_steps_per_call_work_on_two_workers():
    for result in probe_cluster():
        assert "Attempt to convert a value (PerReplica" in result["unpatched"], result
        assert "Invalid reduction dimension 0 for input with 0 dimensions" in result["build_fix_only"], result
        assert result["patched"] == "ok", result
        # steps_per_execution=4: Keras' own multi-step loop fails; fix 3 trains exactly as one step per
        # call does, and as one process does on the same global batches.
        assert "You must feed a value for placeholder tensor" in result["several_steps_without_fix_3"], result
        assert result["several_steps"] == "ok", result
        assert result["several_steps_vs_one_per_call"] <= 1e-6, result
        assert result["several_steps_vs_one_process"] <= 1e-5, result


def test_the_fixes_hold_only_while_the_multi_worker_run_holds_them(tf):
    from keras.src.backend.tensorflow import trainer

    def current():
        return (trainer.TensorFlowTrainer._maybe_symbolic_build, trainer.reduce_per_replica,
                trainer.TensorFlowTrainer._make_function)

    original = current()
    with keras_mwms.patched(force=True) as on:
        assert on and trainer.TensorFlowTrainer._maybe_symbolic_build is keras_mwms._maybe_symbolic_build
        assert trainer.reduce_per_replica is not original[1]
        assert trainer.TensorFlowTrainer._make_function is not original[2]
    assert current() == original
    with pytest.raises(RuntimeError), keras_mwms.patched(force=True):
        raise RuntimeError("a failed run")
    assert current() == original

"""tfprune.multi_worker: nothing patched unless asked; single-process runs unaffected.

Two real worker processes are in tests/test_distributed.py.
"""

import textwrap

import keras
from python_script import run_python


def test_keras_is_patched_only_when_asked():
    script = textwrap.dedent(
        """
        import keras, tfprune
        from keras.src.backend.tensorflow import trainer
        original = trainer.TensorFlowTrainer._maybe_symbolic_build
        tfprune.UpdatePruningStep()
        assert trainer.TensorFlowTrainer._maybe_symbolic_build is original
        assert not tfprune.multi_worker.is_enabled()
        assert tfprune.multi_worker.enable_multi_worker_fit()
        assert tfprune.multi_worker.enable_multi_worker_fit()  # idempotent
        patched = trainer.TensorFlowTrainer._maybe_symbolic_build
        assert patched is not original
        tfprune.multi_worker.enable_multi_worker_fit()
        assert trainer.TensorFlowTrainer._maybe_symbolic_build is patched
        print("PATCH_OK")
        """
    )
    run_python(script, "PATCH_OK")


def test_a_single_process_has_no_other_workers():
    from tfprune import multi_worker

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert multi_worker.other_workers_strategy(model) is None

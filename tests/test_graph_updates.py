"""graph_updates.assign_if: conditional assignments inside compiled steps."""

import textwrap

import keras
import numpy as np
import tensorflow as tf

from python_script import run_python
from tfprune import graph_updates


def test_assigns_only_where_the_predicate_holds_eagerly_and_compiled():
    a = keras.Variable(np.zeros(3, "float32"))
    b = keras.Variable(0.0)
    calls = []

    def values(x):
        calls.append(1)
        return [x * np.ones(3, "float32"), x]

    graph_updates.assign_if(False, values, [a, b], 2.0)
    assert not a.numpy().any() and float(b.numpy()) == 0.0
    graph_updates.assign_if(True, values, [a, b], 2.0)
    np.testing.assert_array_equal(a.numpy(), [2.0, 2.0, 2.0])

    @tf.function(jit_compile=True)
    def step(flag, x):
        graph_updates.assign_if(flag, values, [a, b], x)

    step(tf.constant(False), tf.constant(5.0))
    assert float(b.numpy()) == 2.0
    step(tf.constant(True), tf.constant(5.0))
    assert float(b.numpy()) == 5.0


def test_mirrored_variables_get_one_value_on_every_replica():
    script = textwrap.dedent(
        """
        import numpy as np, tensorflow as tf, keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tfprune import graph_updates
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            w = keras.Variable(np.arange(4, dtype="float32"))  # aggregation "none"
        @tf.function
        def step():
            def replica():
                graph_updates.assign_if(tf.constant(True), lambda: [w.value * 2.0], [w])
            strategy.run(replica)
        step()
        a, b = [v.numpy() for v in strategy.experimental_local_results(w.value)]
        np.testing.assert_array_equal(a, [0, 2, 4, 6])
        np.testing.assert_array_equal(a, b)
        print("ASSIGN_IF_OK")
        """
    )
    run_python(script, "ASSIGN_IF_OK")

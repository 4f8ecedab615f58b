"""The opt-in interface for custom layers that want their weights pruned."""

import abc


class PrunableLayer(abc.ABC):
    """Mix into a custom Keras layer to make it prunable by `prune_low_magnitude`.

    Example:

    ```python
    class MyDense(keras.layers.Layer, tfprune.PrunableLayer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], 8))

        def call(self, x):
            return x @ self.kernel

        def get_prunable_weights(self):
            return [self.kernel]
    ```
    """

    @abc.abstractmethod
    def get_prunable_weights(self):
        """Returns the list of variables to prune (called once the layer is built)."""

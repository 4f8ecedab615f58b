"""KerasHub backbones built from small configs with published layouts (no downloads).

Shared by `benchmarks/zoo_table.py` and the tests; importing this module
imports nothing heavy, building a model imports `keras_hub`.
"""


def mobilenet_v3_small(size):
    """`keras_hub.models.MobileNetBackbone` in MobileNetV3-Small 1.0's layout (939,120
    parameters, as the KerasHub preset), for `size` x `size` RGB images."""
    import keras_hub

    return keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[72, 88], [96, 240, 240], [120, 144], [288, 576, 576]],
        stackwise_num_blocks=[2, 3, 2, 3],
        stackwise_num_filters=[[24, 24], [40, 40, 40], [48, 48], [96, 96, 96]],
        stackwise_kernel_size=[[3, 3], [5, 5, 5], [5, 5], [5, 5, 5]],
        stackwise_num_strides=[[2, 1], [2, 1, 1], [1, 1], [2, 1, 1]],
        stackwise_se_ratio=[[None, None], [0.25] * 3, [0.25] * 2, [0.25] * 3],
        stackwise_activation=[["relu"] * 2, ["hard_swish"] * 3, ["hard_swish"] * 2,
                              ["hard_swish"] * 3],
        stackwise_padding=[[1, 1], [2, 2, 2], [2, 2], [2, 2, 2]],
        output_num_filters=1024, depthwise_filters=16, depthwise_stride=2,
        depthwise_residual=False, last_layer_filter=576, squeeze_and_excite=0.5,
        image_shape=(size, size, 3), input_activation="hard_swish",
        output_activation="hard_swish", input_num_filters=16)

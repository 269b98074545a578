"""Reference models for pruning experiments.

All models are functional Keras 3 models built from ``keras.layers`` only,
channels-last, with deterministic layer names so that pruning reports and
checkpoints can refer to layers by name:

* `vgg16_cifar10`: the VGG16 variant for CIFAR-10 of Li et al. 2017
  ("Pruning Filters for Efficient ConvNets"), 1.50e7 parameters and
  3.13e8 multiply-accumulates.
* `resnet_cifar`: the CIFAR ResNets of He et al. 2016 (ResNet-20 ... -110).
* `eegnet`: EEGNet (Lawhern et al. 2018) for EEG / SSVEP classification.
* `small_cnn` and `small_resnet`: tiny models for the 8x8 digits data, used
  by the demos and the tests.
"""

from __future__ import annotations

import keras
from keras import layers

from ridurre._validation import check_int, check_number

__all__ = ["eegnet", "resnet_cifar", "small_cnn", "small_resnet", "vgg16_cifar10"]

# The small models train for a few hundred steps only: a faster moving average
# lets BatchNormalization's inference statistics catch up with training.
_SMALL_BN_MOMENTUM = 0.9


def _small_bn(name):
    return layers.BatchNormalization(momentum=_SMALL_BN_MOMENTUM, name=name)


_VGG16_PLAN = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


# --------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------


def _positive_int(value, name):
    return check_int(value, name, 1)


def _positive_float(value, name):
    return check_number(value, name, low=0, low_open=True)


def _rate(value, name):
    return check_number(value, name, 0, 1, high_open=True)


def _shape(value, name, rank=3):
    try:
        shape = tuple(value)
    except TypeError:
        shape = ()
    if len(shape) != rank or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ValueError(
            f"`{name}` must be a tuple of {rank} positive ints (channels last, no batch axis), got {value!r}."
        )
    return shape


def _scaled(channels, width_multiplier):
    return max(1, int(round(channels * width_multiplier)))


# --------------------------------------------------------------------------
# Reference models
# --------------------------------------------------------------------------


def vgg16_cifar10(input_shape=(32, 32, 3), num_classes=10, width_multiplier=1.0, dropout=0.5, weight_decay=None):
    """VGG16 for CIFAR-10 as pruned by Li et al. 2017.

    Thirteen 3x3 ``'same'`` convolutions (64, 64, M, 128, 128, M, 256, 256,
    256, M, 512, 512, 512, M, 512, 512, 512, M), each followed by
    BatchNormalization and ReLU, with 2x2 max pooling at every ``M``; then
    Flatten, Dense(512) + BatchNormalization + ReLU + Dropout and a softmax
    classifier. At width 1.0 and 32x32 inputs: 1.50e7 parameters and 3.13e8
    multiply-accumulates.

    Layer names: ``block{b}_conv{i}``, ``block{b}_bn{i}``, ``block{b}_relu{i}``,
    ``block{b}_pool``, ``flatten``, ``fc1``, ``fc1_bn``, ``fc1_relu``,
    ``fc1_dropout`` and ``predictions``.

    Args:
        input_shape: Shape of one image, channels last; each spatial size
            must be at least 32 (five 2x2 poolings).
        num_classes: Number of output classes.
        width_multiplier: Scales every channel count and the Dense 512
            (rounded, at least 1).
        dropout: Dropout rate after ``fc1``, in [0, 1); 0 disables it.
        weight_decay: Optional L2 factor for the kernels of the convolutions
            and Dense layers.

    Returns:
        An uncompiled `keras.Model` named ``"vgg16_cifar10"``.

    Example:

    >>> model = vgg16_cifar10(width_multiplier=0.25)
    >>> model.output_shape
    (None, 10)
    >>> model.get_layer("block1_conv1").filters
    16
    """
    input_shape = _shape(input_shape, "input_shape")
    if min(input_shape[:2]) < 32:
        raise ValueError(
            f"`input_shape` must have spatial sizes of at least 32 for the five poolings of VGG16, got {input_shape!r}."
        )
    _positive_int(num_classes, "num_classes")
    width_multiplier = _positive_float(width_multiplier, "width_multiplier")
    dropout = _rate(dropout, "dropout")
    regularizer = None
    if weight_decay is not None:
        regularizer = keras.regularizers.L2(_positive_float(weight_decay, "weight_decay"))

    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    for b, plan in enumerate(_VGG16_PLAN, start=1):
        for i, channels in enumerate(plan, start=1):
            x = layers.Conv2D(
                _scaled(channels, width_multiplier),
                3,
                padding="same",
                kernel_regularizer=regularizer,
                name=f"block{b}_conv{i}",
            )(x)
            x = layers.BatchNormalization(name=f"block{b}_bn{i}")(x)
            x = layers.ReLU(name=f"block{b}_relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(_scaled(512, width_multiplier), kernel_regularizer=regularizer, name="fc1")(x)
    x = layers.BatchNormalization(name="fc1_bn")(x)
    x = layers.ReLU(name="fc1_relu")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="fc1_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", kernel_regularizer=regularizer, name="predictions")(x)
    return keras.Model(inputs, outputs, name="vgg16_cifar10")


def _conv_bn(x, filters, kernel_size, strides, name, bn_name):
    x = layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False, kernel_initializer="he_normal", name=name
    )(x)
    return layers.BatchNormalization(name=bn_name)(x)


def resnet_cifar(depth=20, num_classes=10, input_shape=(32, 32, 3), width_multiplier=1.0):
    """CIFAR ResNet of He et al. 2016 (ResNet-20, -32, -44, -56, -110...).

    A 3x3 convolution + BatchNormalization + ReLU stem, three stages of
    ``n = (depth - 2) / 6`` basic blocks with 16, 32 and 64 channels (stride
    2 at the start of stages 2 and 3), global average pooling and a softmax
    classifier. A basic block is conv3x3-BN-ReLU-conv3x3-BN, added to the
    shortcut, then ReLU. Where the shape changes the shortcut is a 1x1
    convolution with stride 2 + BN (option B), otherwise the identity.
    Convolutions have no bias (BatchNormalization follows). ResNet-56 has
    0.86 M parameters and about 125 M multiply-accumulates.

    Layer names: ``conv1``, ``bn1``, ``relu1``, then for stage ``s`` and
    block ``b``: ``stage{s}_block{b}_conv1``, ``..._bn1``, ``..._relu1``,
    ``..._conv2``, ``..._bn2``, ``..._shortcut_conv``, ``..._shortcut_bn``,
    ``..._add``, ``..._relu2``; finally ``avg_pool`` and ``predictions``.

    Args:
        depth: Number of weighted layers, ``6 * n + 2`` with ``n >= 1``.
        num_classes: Number of output classes.
        input_shape: Shape of one image, channels last.
        width_multiplier: Scales the 16/32/64 channel counts (rounded, at
            least 1).

    Returns:
        An uncompiled `keras.Model` named ``"resnet{depth}_cifar"``.

    Example:

    >>> model = resnet_cifar(depth=20)
    >>> model.output_shape
    (None, 10)
    >>> model.get_layer("stage2_block1_shortcut_conv").strides
    (2, 2)
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"`depth` must be 6 * n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110...), got {depth!r}.")
    _positive_int(num_classes, "num_classes")
    input_shape = _shape(input_shape, "input_shape")
    width_multiplier = _positive_float(width_multiplier, "width_multiplier")
    blocks = (depth - 2) // 6

    inputs = keras.Input(shape=input_shape, name="input")
    channels = _scaled(16, width_multiplier)
    x = _conv_bn(inputs, channels, 3, 1, "conv1", "bn1")
    x = layers.ReLU(name="relu1")(x)
    for stage, base in enumerate((16, 32, 64), start=1):
        filters = _scaled(base, width_multiplier)
        for block in range(1, blocks + 1):
            name = f"stage{stage}_block{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            shortcut = x
            y = _conv_bn(x, filters, 3, strides, f"{name}_conv1", f"{name}_bn1")
            y = layers.ReLU(name=f"{name}_relu1")(y)
            y = _conv_bn(y, filters, 3, 1, f"{name}_conv2", f"{name}_bn2")
            if strides != 1 or channels != filters:
                shortcut = _conv_bn(x, filters, 1, strides, f"{name}_shortcut_conv", f"{name}_shortcut_bn")
            x = layers.Add(name=f"{name}_add")([y, shortcut])
            x = layers.ReLU(name=f"{name}_relu2")(x)
            channels = filters
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", kernel_initializer="he_normal", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"resnet{depth}_cifar")


def eegnet(num_classes, channels=8, samples=256, F1=8, D=2, F2=16, kernel_length=64, dropout=0.25, norm_rate=0.25):
    """EEGNet (Lawhern et al. 2018), a compact CNN for EEG and SSVEP.

    Input ``(channels, samples, 1)``: a temporal convolution
    (``temporal_conv``, F1 filters of ``(1, kernel_length)``), BN, a
    depthwise spatial convolution over all electrodes (``spatial_depthwise``,
    depth multiplier D, max-norm 1), BN, ELU, 1x4 average pooling, dropout, a
    separable convolution (``separable_conv``, F2 filters of 1x16), BN, ELU,
    1x8 average pooling, dropout, Flatten, a max-norm Dense
    (``classifier``) and a softmax (``softmax``).

    Args:
        num_classes: Number of output classes.
        channels: Number of EEG electrodes (input rows).
        samples: Time samples per trial; at least 32 (two poolings, 4 and 8).
        F1: Number of temporal filters.
        D: Spatial filters per temporal filter (depth multiplier).
        F2: Number of pointwise filters of the separable convolution.
        kernel_length: Length of the temporal kernel (half the sampling rate
            in the paper).
        dropout: Dropout rate in [0, 1) (0.5 within-subject, 0.25
            cross-subject in the paper).
        norm_rate: Max-norm constraint of the classifier's kernel.

    Returns:
        An uncompiled `keras.Model` named ``"eegnet"``.

    Example:

    >>> model = eegnet(num_classes=4, channels=8, samples=128)
    >>> model.input_shape, model.output_shape
    ((None, 8, 128, 1), (None, 4))
    """
    _positive_int(num_classes, "num_classes")
    _positive_int(channels, "channels")
    _positive_int(samples, "samples")
    if samples < 32:
        raise ValueError(f"`samples` must be at least 32 (poolings of 4 and 8), got {samples!r}.")
    for value, name in ((F1, "F1"), (D, "D"), (F2, "F2"), (kernel_length, "kernel_length")):
        _positive_int(value, name)
    dropout = _rate(dropout, "dropout")
    norm_rate = _positive_float(norm_rate, "norm_rate")

    inputs = keras.Input(shape=(channels, samples, 1), name="input")
    x = layers.Conv2D(F1, (1, kernel_length), padding="same", use_bias=False, name="temporal_conv")(inputs)
    x = layers.BatchNormalization(name="temporal_bn")(x)
    x = layers.DepthwiseConv2D(
        (channels, 1),
        depth_multiplier=D,
        use_bias=False,
        depthwise_constraint=keras.constraints.MaxNorm(1.0),
        name="spatial_depthwise",
    )(x)
    x = layers.BatchNormalization(name="spatial_bn")(x)
    x = layers.Activation("elu", name="spatial_elu")(x)
    x = layers.AveragePooling2D((1, 4), name="spatial_pool")(x)
    x = layers.Dropout(dropout, name="spatial_dropout")(x)
    x = layers.SeparableConv2D(F2, (1, 16), padding="same", use_bias=False, name="separable_conv")(x)
    x = layers.BatchNormalization(name="separable_bn")(x)
    x = layers.Activation("elu", name="separable_elu")(x)
    x = layers.AveragePooling2D((1, 8), name="separable_pool")(x)
    x = layers.Dropout(dropout, name="separable_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(num_classes, kernel_constraint=keras.constraints.MaxNorm(norm_rate), name="classifier")(x)
    outputs = layers.Activation("softmax", name="softmax")(x)
    return keras.Model(inputs, outputs, name="eegnet")


# --------------------------------------------------------------------------
# Small models for demos and tests
# --------------------------------------------------------------------------


def small_cnn(input_shape=(8, 8, 1), num_classes=10, filters=(16, 32), dense_units=64):
    """A small plain CNN, fast to train on the 8x8 digits.

    For each entry of ``filters``: a 3x3 ``'same'`` convolution
    (``conv{i}``), BN (``bn{i}``), ReLU (``relu{i}``) and, while the spatial
    size allows it, 2x2 max pooling (``pool{i}``); then Flatten, Dense
    (``fc1``) + ReLU and a softmax classifier (``predictions``). The
    Flatten -> Dense coupling makes it a useful test of channel surgery.

    Args:
        input_shape: Shape of one image, channels last.
        num_classes: Number of output classes.
        filters: Filters of each convolution (a non-empty sequence of
            positive ints).
        dense_units: Units of the hidden Dense layer.

    Returns:
        An uncompiled `keras.Model` named ``"small_cnn"``.

    Example:

    >>> model = small_cnn()
    >>> [layer.name for layer in model.layers if "conv" in layer.name]
    ['conv1', 'conv2']
    """
    input_shape = _shape(input_shape, "input_shape")
    _positive_int(num_classes, "num_classes")
    filters = tuple(filters) if not isinstance(filters, int) else (filters,)
    if not filters:
        raise ValueError("`filters` must be a non-empty sequence of ints.")
    for f in filters:
        _positive_int(f, "filters")
    _positive_int(dense_units, "dense_units")

    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    size = min(input_shape[:2])
    for i, f in enumerate(filters, start=1):
        x = layers.Conv2D(f, 3, padding="same", name=f"conv{i}")(x)
        x = _small_bn(f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        if size >= 2:
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
            size //= 2
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, name="fc1")(x)
    x = layers.ReLU(name="fc1_relu")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def small_resnet(input_shape=(8, 8, 1), num_classes=10, filters=16, blocks=2):
    """A small residual CNN, fast to train on the 8x8 digits.

    A 3x3 convolution stem (``stem_conv``, ``stem_bn``, ``stem_relu``), then
    ``blocks`` identity residual blocks ``block{b}_conv1/bn1/relu1/conv2/bn2``
    joined by ``block{b}_add`` and ``block{b}_relu``, global average pooling
    and a softmax classifier. Every ``Add`` couples the stem's channels with
    each block's second convolution: they must be pruned together.

    Args:
        input_shape: Shape of one image, channels last.
        num_classes: Number of output classes.
        filters: Channels of the stem and of every block.
        blocks: Number of residual blocks.

    Returns:
        An uncompiled `keras.Model` named ``"small_resnet"``.

    Example:

    >>> model = small_resnet(blocks=1)
    >>> model.get_layer("block1_add").output.shape
    (None, 8, 8, 16)
    """
    input_shape = _shape(input_shape, "input_shape")
    _positive_int(num_classes, "num_classes")
    _positive_int(filters, "filters")
    _positive_int(blocks, "blocks")

    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.Conv2D(filters, 3, padding="same", name="stem_conv")(inputs)
    x = _small_bn("stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for b in range(1, blocks + 1):
        y = layers.Conv2D(filters, 3, padding="same", name=f"block{b}_conv1")(x)
        y = _small_bn(f"block{b}_bn1")(y)
        y = layers.ReLU(name=f"block{b}_relu1")(y)
        y = layers.Conv2D(filters, 3, padding="same", name=f"block{b}_conv2")(y)
        y = _small_bn(f"block{b}_bn2")(y)
        x = layers.Add(name=f"block{b}_add")([x, y])
        x = layers.ReLU(name=f"block{b}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="small_resnet")

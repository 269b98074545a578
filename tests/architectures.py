"""Small architectures covering every coupling the surgeon handles (shared by several tests)."""

import keras
from keras import layers as L


def sequential_cnn():
    return keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            L.Conv2D(8, 3, activation="relu", name="c1"),
            L.BatchNormalization(name="bn1"),
            L.MaxPooling2D(),
            L.Conv2D(6, 3, padding="same", name="c2"),
            L.Flatten(),
            L.Dense(12, activation="relu", name="fc"),
            L.Dropout(0.1),
            L.Dense(4, name="out"),
        ],
        name="sequential_cnn",
    )


def residual():
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, padding="same", name="stem")(x)
    h = L.BatchNormalization(name="stem_bn")(h)
    h = L.ReLU()(h)
    for i in range(2):
        r = L.Conv2D(8, 3, padding="same", name=f"r{i}a")(h)
        r = L.BatchNormalization(name=f"r{i}bn")(r)
        r = L.Activation("relu")(r)
        r = L.Conv2D(8, 3, padding="same", name=f"r{i}b")(r)
        h = L.Add(name=f"add{i}")([h, r])
        h = L.ReLU()(h)
    d = L.Conv2D(12, 1, strides=2, name="down")(h)
    r = L.Conv2D(12, 3, strides=2, padding="same", activation="sigmoid", name="r2")(h)
    h = L.Subtract()([d, r])
    h = L.Multiply()([h, L.Conv2D(12, 1, name="gate")(h)])
    h = L.Average()([h, L.Conv2D(12, 1, name="avg")(h)])
    h = L.Maximum()([h, L.Conv2D(12, 1, name="mx")(h)])
    h = L.Minimum()([h, L.Conv2D(12, 1, name="mn")(h)])
    out = L.Dense(3, name="out")(L.GlobalAveragePooling2D()(h))
    return keras.Model(x, out, name="residual")


def concatenating():
    x = keras.Input((8, 8, 2))
    a = L.Conv2D(5, 3, padding="same", name="a")(x)
    b = L.Conv2D(7, 1, name="b")(x)
    c = L.Concatenate(name="cat")([a, b])
    c = L.BatchNormalization(name="cat_bn")(c)
    d = L.Conv2D(4, 3, padding="same", name="d")(c)
    e = L.Concatenate(name="cat2")([c, d])
    e = L.AveragePooling2D(2)(e)
    out = L.Dense(3, name="out")(L.Flatten()(e))
    return keras.Model(x, out, name="concatenating")


def depthwise(multiplier=2):
    x = keras.Input((9, 9, 3))
    h = L.Conv2D(6, 1, name="expand")(x)
    h = L.BatchNormalization(name="bn0")(h)
    h = L.DepthwiseConv2D(3, depth_multiplier=multiplier, padding="same", name="dw")(h)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.ReLU(6.0)(h)
    h = L.SeparableConv2D(8, 3, depth_multiplier=2, name="sep")(h)
    h = L.PReLU(name="prelu")(h)
    h = L.ZeroPadding2D(1)(h)
    h = L.Cropping2D(1)(h)
    h = L.UpSampling2D(2)(h)
    h = L.Conv2D(6, 1, name="project")(h)
    out = L.Dense(3, name="out")(L.GlobalMaxPooling2D()(h))
    return keras.Model(x, out, name=f"depthwise_m{multiplier}")


def grouped():
    x = keras.Input((6, 6, 4))
    h = L.Conv2D(8, 1, name="c0")(x)
    h = L.Conv2D(12, 3, groups=4, padding="same", name="g1")(h)
    h = L.BatchNormalization(name="gbn")(h)
    h = L.Conv2D(6, 1, groups=2, name="g2")(h)
    out = L.Dense(2, name="out")(L.GlobalAveragePooling2D()(h))
    return keras.Model(x, out, name="grouped")


def conv1d_3d():
    x = keras.Input((16, 3))
    h = L.Conv1D(6, 3, name="c1d")(x)
    h = L.SeparableConv1D(5, 3, name="sep1d")(h)
    h = L.DepthwiseConv1D(3, depth_multiplier=2, name="dw1d")(h)
    h = L.Conv1DTranspose(4, 3, name="t1d")(h)
    h = L.Reshape((-1, 1, 4))(h)
    h = L.Conv2DTranspose(5, 3, name="t2d")(h)
    h = L.Reshape((-1, 1, 1, 5))(h)
    h = L.Conv3D(4, 1, name="c3d")(h)
    h = L.Flatten()(h)
    out = L.Dense(2, name="out")(h)
    return keras.Model(x, out, name="conv1d_3d")


def squeeze_excite():
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, padding="same", activation="swish", name="c")(x)
    s = L.GlobalAveragePooling2D()(h)
    s = L.Reshape((1, 1, 8))(s)
    s = L.Conv2D(2, 1, activation="relu", name="se_reduce")(s)
    s = L.Conv2D(8, 1, activation="sigmoid", name="se_expand")(s)
    h = L.Multiply()([h, s])
    h = L.Permute((2, 1, 3))(h)
    h = L.Conv2D(4, 1, name="proj")(h)
    h = L.Reshape((-1,))(h)
    out = L.Dense(2, name="out")(h)
    return keras.Model(x, out, name="squeeze_excite")


def mlp():
    x = keras.Input((12,))
    h = L.Dense(16, activation="tanh", name="h1")(x)
    h = L.LayerNormalization(name="ln")(h)
    h = L.Dense(10, activation="sigmoid", name="h2")(h)
    h = L.Dropout(0.2)(h)
    out = L.Dense(3, name="out")(h)
    return keras.Model(x, out, name="mlp")


def nested():
    inner_in = keras.Input((8, 8, 3))
    t = L.Conv2D(6, 3, padding="same", name="base_conv1")(inner_in)
    t = L.BatchNormalization(name="base_bn")(t)
    t = L.Conv2D(10, 3, padding="same", name="base_conv2")(t)
    base = keras.Model(inner_in, t, name="base")
    head = keras.Sequential(
        [keras.Input((10,)), L.Dense(7, name="head_hidden"), L.Dense(3, name="head_out")], name="head"
    )
    x = keras.Input((8, 8, 3))
    h = base(x)
    h = L.Conv2D(5, 1, name="adapter")(h)
    h = L.GlobalAveragePooling2D()(h)
    h = L.Dense(10, name="fc")(h)
    return keras.Model(x, head(h), name="nested")


def shared():
    x = keras.Input((8, 8, 3))
    y = keras.Input((8, 8, 3))
    conv = L.Conv2D(6, 3, padding="same", name="shared_conv")
    bn = L.BatchNormalization(name="shared_bn")
    a = bn(conv(x))
    b = bn(conv(y))
    again = L.Conv2D(6, 1, name="shared_again")
    c = again(again(a))
    h = L.Concatenate()([c, b])
    h = L.Conv2D(4, 1, name="mix")(h)
    out = L.Dense(2, name="out")(L.GlobalAveragePooling2D()(h))
    return keras.Model([x, y], out, name="shared")


def group_norm():
    x = keras.Input((6, 6, 2))
    h = L.Conv2D(8, 3, padding="same", name="c")(x)
    h = L.GroupNormalization(groups=4, name="gn")(h)
    h = L.Conv2D(4, 1, name="p")(h)
    out = L.Dense(2, name="out")(L.Flatten()(h))
    return keras.Model(x, out, name="group_norm")


def depthwise_m1():
    return depthwise(1)


EXACT = [
    sequential_cnn,
    residual,
    concatenating,
    depthwise,
    depthwise_m1,
    grouped,
    conv1d_3d,
    squeeze_excite,
    nested,
    shared,
    group_norm,
]


# -- sequence layers, scale layers, grouped convolutions and raw ops (issue 10) ------------------


def recurrent():
    x = keras.Input((6, 4))
    h = L.Conv1D(8, 3, padding="same", name="c")(x)
    h = L.LSTM(7, return_sequences=True, name="lstm")(h)
    h = L.GRU(6, return_sequences=True, name="gru")(h)
    h = L.GRU(5, reset_after=False, return_sequences=True, go_backwards=True, name="gru_v1")(h)
    h = L.SimpleRNN(4, name="rnn")(h)
    return keras.Model(x, L.Dense(3, name="out")(h), name="recurrent")


def bidirectional():
    x = keras.Input((7,), dtype="int32")
    h = L.Embedding(20, 8, name="emb")(x)
    h = L.Conv1D(6, 3, name="c")(h)
    h = L.Bidirectional(L.LSTM(5, return_sequences=True), name="bi_concat")(h)
    h = L.Bidirectional(L.GRU(4, return_sequences=True), merge_mode="sum", name="bi_sum")(h)
    h = L.Bidirectional(L.SimpleRNN(4, return_sequences=True), merge_mode="ave", name="bi_ave")(h)
    h = L.Bidirectional(L.LSTM(3), merge_mode="mul", name="bi_mul")(h)
    return keras.Model(x, L.Dense(3, name="out")(h), name="bidirectional")


def masked_sequence():
    """Masks from Embedding(mask_zero=True) reach the LSTM, GRU and pooling as extra inputs."""
    x = keras.Input((8,), dtype="int32")
    h = L.Embedding(4, 6, mask_zero=True, name="emb")(x)  # ids 0..3: a quarter of the steps masked
    h = L.LSTM(5, return_sequences=True, name="lstm")(h)
    h = L.GRU(4, return_sequences=True, name="gru")(h)
    return keras.Model(x, L.Dense(2, name="out")(L.GlobalAveragePooling1D()(h)), name="masked_sequence")


def time_distributed():
    x = keras.Input((4, 6, 6, 2))
    h = L.TimeDistributed(L.Conv2D(5, 3, name="conv"), name="td_conv")(x)
    h = L.TimeDistributed(L.BatchNormalization(name="bn"), name="td_bn")(h)
    h = L.TimeDistributed(L.GlobalAveragePooling2D(), name="td_gap")(h)
    h = L.TimeDistributed(L.Dense(6, activation="relu", name="dense"), name="td_dense")(h)
    h = L.LSTM(4, name="lstm")(h)
    return keras.Model(x, L.Dense(2, name="out")(h), name="time_distributed")


def conv_lstm():
    x = keras.Input((3, 6, 6, 2))
    h = L.ConvLSTM2D(4, 3, padding="same", return_sequences=True, name="cl1")(x)
    h = L.ConvLSTM2D(5, 3, name="cl2")(h)
    h = L.Conv2D(3, 1, name="proj")(h)
    return keras.Model(x, L.Dense(2, name="out")(L.Flatten()(h)), name="conv_lstm")


def scale_layers():
    """ConvNeXt's LayerScale and StochasticDepth, InceptionResNetV2's CustomScaleLayer, and
    depthwise convolutions written as Conv2D(groups=C)."""
    from keras.src.applications.convnext import LayerScale, StochasticDepth
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    x = keras.Input((6, 6, 3))
    s = L.Conv2D(8, 1, name="stem")(x)
    h = L.Conv2D(8, 3, padding="same", groups=8, name="dw")(s)
    h = L.Conv2D(16, 3, padding="same", groups=8, name="dw2")(h)
    h = L.BatchNormalization(name="bn")(h)
    h = L.Conv2D(8, 1, name="pw")(h)
    h = LayerScale(0.5, 8, name="ls")(h)
    h = StochasticDepth(0.1, name="sd")(h)
    s = s + h
    r = L.Conv2D(8, 1, name="branch")(s)
    s = CustomScaleLayer(0.2, name="cs")([s, r])
    return keras.Model(x, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(s)), name="scale_layers")


def raw_ops():
    """split (on the channel axis: a GLU; on a spatial axis), pad, indexing, unary functions,
    transpose, resize, reductions over spatial axes."""
    ops = keras.ops
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, padding="same", name="c")(x)
    a, b = ops.split(h, 2, axis=-1)
    h = a * ops.sigmoid(b)
    h = ops.pad(h, [[0, 0], [1, 1], [1, 1], [0, 0]])
    h = h[:, 1:-1, 1:-1, :]
    h = ops.clip(ops.abs(h), 0.0, 2.0) + ops.square(ops.erf(h)) + ops.exp(-ops.square(h))
    h = L.Conv2D(6, 3, padding="same", name="d")(h)
    top, bottom = ops.split(h, 2, axis=1)
    h = ops.transpose(top + bottom, (0, 2, 1, 3))
    h = L.Resizing(6, 6, name="resizing")(ops.image.resize(h, (8, 8)))
    e = L.Conv2D(5, 1, name="e")(h)
    pooled = ops.concatenate([ops.mean(h, axis=(1, 2)), ops.max(ops.sum(e, axis=1, keepdims=True), axis=(1, 2))], -1)
    return keras.Model(x, L.Dense(2, name="out")(pooled), name="raw_ops")


EXACT_LAYERS = [recurrent, bidirectional, masked_sequence, time_distributed, conv_lstm, scale_layers, raw_ops]
"""Models of the sequence, scale, grouped-convolution and raw-op rules: deleted == zeroed."""


def normalized_stream():
    """A residual stream through LayerNormalization and RMSNormalization, and a UnitNormalization:
    prunable, but not exact (ChannelGroup.exact is False)."""
    x = keras.Input((5, 6))
    h = L.Dense(8, name="proj")(x)
    r = L.LayerNormalization(name="ln")(h)
    r = L.Dense(16, activation="gelu", name="ffn1")(r)
    r = L.Dense(8, name="ffn2")(r)
    h = L.Add(name="add")([h, r])
    h = L.RMSNormalization(name="rms")(h)
    h = L.Dense(6, activation="sigmoid", name="ffn3")(h)
    h = L.UnitNormalization(name="unit")(h)
    out = L.Dense(2, name="out")(L.GlobalAveragePooling1D()(h))
    return keras.Model(x, out, name="normalized_stream")

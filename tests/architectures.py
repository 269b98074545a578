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

"""Rules of Keras's attention layers: ``MultiHeadAttention`` and ``GroupedQueryAttention``
(``keras.layers.GroupQueryAttention``).

An attention layer has channels in four places:

* the **feature axes of its inputs** (query, value, key): each projection consumes them, so they
  stay in the groups of the tensors that feed them (the residual stream of a transformer);
* the **output projection's units**: a ``MultiHeadAttention`` produces them (its
  ``output_shape`` is set explicitly when they shrink). ``GroupedQueryAttention`` always
  projects back to its query's width and needs its value as wide as its query, so its output
  and its value's features are joined to its query's features;
* the **heads**, internal units (``"<layer>:heads"``, kind ``"heads"``): removing head h slices
  the query, key, value (and gate) kernels and biases at h and the output kernel's rows of h,
  and ``num_heads`` shrinks. In ``GroupedQueryAttention`` a key/value head carries its query
  heads (``"<layer>:kv_heads"``: removing one removes its ``num_query_heads /
  num_key_value_heads`` query heads, as Torch-Pruning does), and ``"<layer>:query_heads"``
  (kind ``"query_heads"``, or ``"heads"`` when there is a single key/value head) removes query
  head r of every key/value head;
* the **head dimensions**, internal units of kind ``"head_dims"``: dimension j of every head's
  query and key (the query is rescaled by ``sqrt(new key_dim / key_dim)`` so the scores keep
  their ``1 / sqrt(key_dim)`` scale exactly) and of every head's value, gate and output rows.
  When ``key_dim == value_dim`` (Keras's default) they go together, ``"<layer>:head_dims"``, as
  in Torch-Pruning (and Keras's JAX backend needs them equal); a layer built with different
  sizes has ``"<layer>:key_dims"`` and ``"<layer>:value_dims"``. ``GroupedQueryAttention`` has
  one ``head_dim`` for all four: ``"<layer>:head_dims"``.

Self- and cross-attention, ``key`` given or not, ``attention_mask`` (its units are positions:
left alone), ``use_causal_mask``, ``use_gate``, ``attention_axes`` and ``output_shape`` are
followed; a layer returning its attention scores keeps its heads (the scores' head axis would
change). Every slice is exact: the pruned layer computes what the layer computes with the same
units zeroed (``zero_units``), which the property tests check.

MACs per example: the four projections (``positions x in_features x heads x head_dim``, the
output ``positions x heads x value_dim x out_features``, the gate like the value) plus the
attention products, ``heads x target positions x source positions x (key_dim + value_dim)``
for the traced sequence lengths; the softmax (and the gate's sigmoid) count as activation work.
"""

from __future__ import annotations

import math

import numpy as np

from ridurre.rules.base import LayerRule, Unsupported, bias_add_can_misroute, prod

__all__ = ["MultiHeadAttentionRule", "GroupedQueryAttentionRule"]


def _gated(layer) -> bool:
    """Whether the layer gates its attention output (``use_gate=True``)."""
    return bool(getattr(layer, "_use_gate", getattr(layer, "use_gate", False)))


def _roles(layer) -> list[str]:
    """The variables of an attention layer in creation order: query, key, gate, value, output."""
    parts = ["query", "key"] + (["gate"] if _gated(layer) else [])
    parts += ["value", "attention_output"]
    use_bias = bool(layer.use_bias)
    return [f"{p}/{w}" for p in parts for w in (("kernel", "bias") if use_bias else ("kernel",))]


def _check_variables(layer):
    roles = _roles(layer)
    names = [str(v.name).split("/")[-1].split(":")[0] for v in layer.weights]
    if not layer.weights:
        raise Unsupported("the layer is not built")
    if names != [r.split("/")[1] for r in roles]:
        raise Unsupported(f"its variables {names} are not the plain query/key/value/output projections (LoRA?)")
    if getattr(layer, "quantization_mode", None):
        raise Unsupported("quantized layers are not pruned")


def _named(layer, weights) -> dict:
    """``weights`` (by any naming) as ``{role: array}``."""
    roles = _roles(layer)
    if len(roles) != len(weights):
        raise ValueError(f"layer {layer.name!r}: expected the variables {roles}, got {list(weights)}")
    return dict(zip(roles, weights.values()))


def _back(layer, weights, named) -> dict:
    return {key: named[role] for key, role in zip(weights, _roles(layer))}


def _take(array, axis, keep):
    return array if keep is None else np.compress(keep, array, axis=axis)


def _zero(array, axis, gone):
    if gone is None or not gone.any():
        return array
    array = array.copy()
    index = [slice(None)] * array.ndim
    index[axis] = gone
    array[tuple(index)] = 0
    return array


class _AttentionRule(LayerRule):
    """What both attention rules share: named inputs, the weights by role, the cost."""

    produces = True
    channel_dependent = True
    cost = "activation"
    call_inputs = ("query", "value", "key")

    # -- per layer type ---------------------------------------------------------------------
    def _heads(self, layer) -> int:
        raise NotImplementedError

    def _dims(self, layer) -> tuple[int, int]:
        """``(key_dim, value_dim)``."""
        raise NotImplementedError

    def _kv_heads(self, layer) -> int:
        return self._heads(layer)

    # -- tracing ----------------------------------------------------------------------------
    def _inputs(self, in_layouts):
        query, value, key = (list(in_layouts) + [None, None, None])[:3]
        if query is None or value is None:
            raise Unsupported("query and value must each be one tensor")
        return query, value, value if key is None else key

    def _outputs(self, layer, out_shapes, ctx, heads):
        """The units of a second output (the attention scores), which hold positions."""
        if len(out_shapes) == 1:
            return []
        ctx.block(heads, "its attention scores are returned, whose head axis would change")
        scores = ctx.new_units(out_shapes[1][-1], internal="attention_scores")
        ctx.block(scores, "attention scores hold positions, not channels")
        return [scores]

    def _guard_bias_add(self, layer, in_shapes, ctx, heads, dims):
        """Keep a projection's ``(heads, head_dim)`` bias from reaching a shape that Keras's
        TensorFlow backend adds over the positions (see
        :func:`ridurre.rules.base.bias_add_can_misroute`): ``(heads, 1)`` with as many heads as
        positions on the first axis. When the heads could match the positions, the head
        dimensions are kept (so none reaches 1), and the heads too when a dimension is already 1.

        Args:
            heads: the layouts of the internal units that change the number of heads.
            dims: the layouts of the head dimensions.
        """
        if not layer.use_bias:
            return
        query, value, key = (list(in_shapes) + [None, None, None])[:3]
        key = value if key is None else key
        # traced shapes have no batch axis; a projection gives (batch, positions..., heads, head_dim)
        heads_axis = len(query)
        risky = False
        for shape, n in ((query, self._heads(layer)), (value, self._kv_heads(layer)), (key, self._kv_heads(layer))):
            # a sequence of unknown length (None) is not checked
            risky = risky or bias_add_can_misroute(len(shape) + 2, shape[0], {heads_axis: range(1, n + 1)})
        if not risky:
            return
        reason = (
            "as many heads as positions: a projection bias of shape (heads, 1) would be added over the positions "
            "by Keras's TensorFlow backend"
        )
        blocked = dims + (heads if min(self._dims(layer)) == 1 else [])
        for layout in blocked:
            ctx.block(layout, reason)

    # -- cost -------------------------------------------------------------------------------
    def _attention_positions(self, layer, query_shape, value_shape):
        """``(batch-like positions, target positions, source positions)`` of one example."""
        return 1, prod(query_shape[1:-1]), prod(value_shape[1:-1])

    def macs(self, layer, in_shapes, out_shapes):
        query, value, key = (list(in_shapes) + [None, None, None])[:3]
        key = value if key is None else key
        heads, kv_heads = self._heads(layer), self._kv_heads(layer)
        key_dim, value_dim = self._dims(layer)
        q_pos, kv_pos = prod(query[1:-1]), prod(value[1:-1])
        out_features = prod(out_shapes[0][len(query) - 1 :])
        gate = q_pos * query[-1] * heads * value_dim if _gated(layer) else 0
        projections = (
            q_pos * query[-1] * heads * key_dim
            + kv_pos * key[-1] * kv_heads * key_dim
            + kv_pos * value[-1] * kv_heads * value_dim
            + q_pos * heads * value_dim * out_features
            + gate
        )
        batch, target, source = self._attention_positions(layer, query, value)
        return projections + batch * target * source * heads * (key_dim + value_dim)

    def other_ops(self, layer, in_shapes, out_shapes):
        query, value = in_shapes[0], in_shapes[1]
        batch, target, source = self._attention_positions(layer, query, value)
        gate = prod(query[1:-1]) * self._heads(layer) * self._dims(layer)[1] if _gated(layer) else 0
        return batch * target * source * self._heads(layer) + gate

    # -- criteria ---------------------------------------------------------------------------
    def output_weights(self, layer, weights):
        out = np.asarray(_named(layer, weights)["attention_output/kernel"])
        moved = np.moveaxis(out, -1, 0)
        return moved.reshape(moved.shape[0], -1)

    def _activity(self, layer, args, kwargs):
        """``(query, key, value inputs, attention probabilities (B, heads, T, S))`` on data."""
        import keras

        names = ("query", "value", "key")
        given = dict(zip(names, args))
        given.update({k: v for k, v in kwargs.items() if k in names})
        if any(np.ndim(given.get(k)) != 3 for k in ("query", "value")):
            raise ValueError(
                f"layer {layer.name!r}: head activations are computed for (batch, sequence, features) inputs only"
            )
        options = {k: v for k, v in kwargs.items() if k not in names and k != "return_attention_scores"}
        options["training"] = False
        _, scores = layer(given["query"], given["value"], given.get("key"), return_attention_scores=True, **options)
        key = given["value"] if given.get("key") is None else given["key"]
        probs = keras.ops.convert_to_numpy(scores)
        return np.asarray(given["query"]), np.asarray(key), np.asarray(given["value"]), probs


def _dims_masks(masks):
    """``(key dims mask, value dims mask)`` of a MultiHeadAttention's :class:`UnitMasks`."""
    if "head_dims" in masks.internal:
        return masks.internal["head_dims"], masks.internal["head_dims"]
    return masks.internal["key_dims"], masks.internal["value_dims"]


def _internal_names(rule, layer):
    """The internal unit names a MultiHeadAttention gets (head dims together when equal)."""
    key_dim, value_dim = rule._dims(layer)
    return ("heads", "head_dims") if key_dim == value_dim else ("heads", "key_dims", "value_dims")


def _project(x, kernel, bias):
    y = np.einsum("...m,mnh->...nh", x, kernel)
    return y if bias is None else y + bias


def _rms(x, axis=-1):
    return np.sqrt(np.mean(np.square(x), axis=axis))


class MultiHeadAttentionRule(_AttentionRule):
    """``keras.layers.MultiHeadAttention``: heads, key and value dimensions, output units; the
    query, key and value features stay in the groups that feed them (see the module docstring).

    Example:
        >>> import keras, ridurre
        >>> x = keras.Input((6, 16))
        >>> h = keras.layers.Dense(16, name="proj")(x)
        >>> a = keras.layers.MultiHeadAttention(4, 8, name="mha")(h, h)
        >>> y = keras.layers.Dense(3, name="head")(keras.layers.Add()([h, a]))
        >>> for g in ridurre.channel_groups(keras.Model(x, y))[1:-1]:
        ...     print(g.producers, g.kind, g.size, g.prunable)
        ('proj', 'mha') channels 16 True
        ('mha:heads',) heads 4 True
        ('mha:head_dims',) head_dims 8 True
    """

    def _heads(self, layer):
        return int(layer.num_heads)

    def _dims(self, layer):
        return int(layer.key_dim), int(layer.value_dim)

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        query, value, key = self._inputs(in_layouts)
        _check_variables(layer)
        out = ctx.new_units(out_shapes[0][-1])
        heads = ctx.new_units(self._heads(layer), internal="heads", kind="heads")
        key_dim, value_dim = self._dims(layer)
        if key_dim == value_dim:
            dims = [ctx.new_units(key_dim, internal="head_dims", kind="head_dims")]
        else:
            dims = [ctx.new_units(key_dim, internal="key_dims", kind="head_dims")]
            dims.append(ctx.new_units(value_dim, internal="value_dims", kind="head_dims"))
        self._guard_bias_add(layer, in_shapes, ctx, [heads], dims)
        return [out] + self._outputs(layer, out_shapes, ctx, heads)

    def _attention_positions(self, layer, query_shape, value_shape):
        rank = len(query_shape)  # with the batch axis; the projections insert the head axis
        axes = tuple(getattr(layer, "attention_axes", None) or range(1, rank - 1))
        axes = tuple(a % (rank + 1) for a in axes)
        inner = range(1, rank - 1)
        batch = prod(query_shape[a] for a in inner if a not in axes)
        return batch, prod(query_shape[a] for a in axes), prod(value_shape[a] for a in axes)

    def slice_units(self, layer, config, weights, keep):
        w = _named(layer, weights)
        q_in, v_in, k_in = (list(keep.inputs) + [None, None, None])[:3]
        k_in = v_in if k_in is None else k_in
        heads, (kd, vd) = keep.internal["heads"], _dims_masks(keep)
        out = keep.outputs[0]
        scale = math.sqrt(np.count_nonzero(kd) / len(kd))
        for part, rows, dims in (("query", q_in, kd), ("key", k_in, kd), ("value", v_in, vd), ("gate", q_in, vd)):
            if f"{part}/kernel" not in w:
                continue
            factor = scale if part == "query" else 1.0
            w[f"{part}/kernel"] = _take(_take(_take(w[f"{part}/kernel"], 0, rows), 1, heads), 2, dims) * factor
            if f"{part}/bias" in w:
                w[f"{part}/bias"] = _take(_take(w[f"{part}/bias"], 0, heads), 1, dims) * factor
        w["attention_output/kernel"] = _take(_take(_take(w["attention_output/kernel"], 0, heads), 1, vd), -1, out)
        if "attention_output/bias" in w:
            w["attention_output/bias"] = _take(w["attention_output/bias"], -1, out)
        output_shape = tuple(int(d) for d in w["attention_output/kernel"].shape[2:])
        config = {
            **config,
            "num_heads": int(np.count_nonzero(heads)),
            "key_dim": int(np.count_nonzero(kd)),
            "value_dim": int(np.count_nonzero(vd)),
            "output_shape": output_shape,
        }
        return config, _back(layer, weights, w)

    def zero_units(self, layer, weights, gone):
        w = _named(layer, weights)
        q_in, v_in, k_in = (list(gone.inputs) + [None, None, None])[:3]
        k_in = v_in if k_in is None else k_in
        heads, (kd, vd) = gone.internal["heads"], _dims_masks(gone)
        for part, rows, dims in (("query", q_in, kd), ("key", k_in, kd), ("value", v_in, vd), ("gate", q_in, vd)):
            if f"{part}/kernel" not in w:
                continue
            w[f"{part}/kernel"] = _zero(_zero(_zero(w[f"{part}/kernel"], 0, rows), 1, heads), 2, dims)
            if f"{part}/bias" in w:
                w[f"{part}/bias"] = _zero(_zero(w[f"{part}/bias"], 0, heads), 1, dims)
        w["attention_output/kernel"] = _zero(
            _zero(_zero(w["attention_output/kernel"], 0, heads), 1, vd), -1, gone.outputs[0]
        )
        if "attention_output/bias" in w:
            w["attention_output/bias"] = _zero(w["attention_output/bias"], -1, gone.outputs[0])
        return _back(layer, weights, w)

    def unit_weights(self, layer, weights, internal):
        w = _named(layer, weights)
        q, k, v, o = (np.asarray(w[f"{p}/kernel"]) for p in ("query", "key", "value", "attention_output"))
        gate = [np.asarray(w["gate/kernel"])] if "gate/kernel" in w else []
        if internal == "heads":
            parts = [np.moveaxis(a, 1, 0) for a in [q, k, v] + gate] + [o]
            return np.concatenate([p.reshape(p.shape[0], -1) for p in parts], axis=1)
        key = [np.moveaxis(a, -1, 0) for a in (q, k)]
        value = [np.moveaxis(a, -1, 0) for a in [v] + gate] + [np.moveaxis(o, 1, 0)]
        parts = {"key_dims": key, "value_dims": value, "head_dims": key + value}.get(internal)
        if parts is None:
            return None
        return np.concatenate([p.reshape(p.shape[0], -1) for p in parts], axis=1)

    def unit_activations(self, layer, args, kwargs):
        """Per head: the RMS of its contribution to the attention output, per position; per
        value dimension (and per head dimension when key and value go together): the same over
        every head's dimension; per key dimension: its share of the query-key products (mean |q|
        x mean |k| over the positions, averaged over heads)."""
        xq, xk, xv, probs = self._activity(layer, args, kwargs)
        w = _named(layer, _weights_in_order(layer))
        v = _project(xv, w["value/kernel"], w.get("value/bias"))
        context = np.einsum("bnts,bsnh->btnh", probs, v)
        if "gate/kernel" in w:
            context = context / (1.0 + np.exp(-_project(xq, w["gate/kernel"], w.get("gate/bias"))))
        out = w["attention_output/kernel"].reshape(self._heads(layer), self._dims(layer)[1], -1)
        per_head = np.einsum("btnh,nho->btno", context, out)
        per_dim = np.einsum("btnh,nho->btho", context, out)
        if "head_dims" in _internal_names(self, layer):
            return {"heads": _rms(per_head), "head_dims": _rms(per_dim)}
        q = _project(xq, w["query/kernel"], w.get("query/bias"))
        k = _project(xk, w["key/kernel"], w.get("key/bias"))
        key_share = (np.abs(q).mean(axis=1) * np.abs(k).mean(axis=1)).mean(axis=1)  # (B, key_dim)
        return {"heads": _rms(per_head), "value_dims": _rms(per_dim), "key_dims": key_share}


class GroupedQueryAttentionRule(_AttentionRule):
    """``keras.layers.GroupQueryAttention`` (class ``GroupedQueryAttention``): key/value heads with
    their query heads, query heads per key/value head, the shared head dimension; its output and
    its value's features are joined to its query's features (see the module docstring).

    Example:
        >>> import keras, ridurre
        >>> x = keras.Input((6, 16))
        >>> h = keras.layers.Dense(16, name="proj")(x)
        >>> a = keras.layers.GroupQueryAttention(8, 4, 2, name="gqa")(h, h)
        >>> y = keras.layers.Dense(3, name="head")(keras.layers.Add()([h, a]))
        >>> for g in ridurre.channel_groups(keras.Model(x, y))[1:-1]:
        ...     print(g.producers, g.kind, g.size, g.prunable)
        ('proj',) channels 16 True
        ('gqa:kv_heads',) heads 2 True
        ('gqa:query_heads',) query_heads 2 True
        ('gqa:head_dims',) head_dims 8 True
    """

    def _heads(self, layer):
        return int(layer.num_query_heads)

    def _kv_heads(self, layer):
        return int(layer.num_key_value_heads)

    def _dims(self, layer):
        return int(layer.head_dim), int(layer.head_dim)

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        query, value, key = self._inputs(in_layouts)
        _check_variables(layer)
        if len(query) != len(value):
            raise Unsupported("query and value have different widths")
        if value is not query:
            ctx.union(query, value)  # Keras needs them equally wide
        kv_heads = ctx.new_units(self._kv_heads(layer), internal="kv_heads", kind="heads")
        # the query heads of each key/value head: the layer's heads when there is one key/value head
        kind = "heads" if self._kv_heads(layer) == 1 else "query_heads"
        slots = ctx.new_units(self._heads(layer) // self._kv_heads(layer), internal="query_heads", kind=kind)
        dims = ctx.new_units(int(layer.head_dim), internal="head_dims", kind="head_dims")
        self._guard_bias_add(layer, in_shapes, ctx, [kv_heads, slots], [dims])
        if out_shapes[0][-1] != in_shapes[0][-1]:
            raise Unsupported("the output is not as wide as the query")
        # the output projection always has the query's width: its units are the query's
        return [query] + self._outputs(layer, out_shapes, ctx, kv_heads)

    def _query_heads(self, layer, kv, slots):
        """Mask over query heads from the masks over key/value heads and over query slots."""
        if kv is None and slots is None:
            return None
        n_kv, repeats = self._kv_heads(layer), self._heads(layer) // self._kv_heads(layer)
        kv = np.ones(n_kv, bool) if kv is None else kv
        slots = np.ones(repeats, bool) if slots is None else slots
        return (kv[:, None] & slots[None, :]).ravel()

    def slice_units(self, layer, config, weights, keep):
        w = _named(layer, weights)
        q_in, v_in, k_in = (list(keep.inputs) + [None, None, None])[:3]
        k_in = v_in if k_in is None else k_in
        kv, slots, dims = keep.internal["kv_heads"], keep.internal["query_heads"], keep.internal["head_dims"]
        heads = self._query_heads(layer, kv, slots)
        scale = math.sqrt(np.count_nonzero(dims) / len(dims))
        for part, rows, cols in (("query", q_in, heads), ("key", k_in, kv), ("value", v_in, kv), ("gate", q_in, heads)):
            if f"{part}/kernel" not in w:
                continue
            factor = scale if part == "query" else 1.0
            w[f"{part}/kernel"] = _take(_take(_take(w[f"{part}/kernel"], 0, rows), 1, cols), 2, dims) * factor
            if f"{part}/bias" in w:
                w[f"{part}/bias"] = _take(_take(w[f"{part}/bias"], 0, cols), 1, dims) * factor
        w["attention_output/kernel"] = _take(
            _take(_take(w["attention_output/kernel"], 0, heads), 1, dims), 2, keep.outputs[0]
        )
        if "attention_output/bias" in w:
            w["attention_output/bias"] = _take(w["attention_output/bias"], 0, keep.outputs[0])
        n_kv, n_slots = int(np.count_nonzero(kv)), int(np.count_nonzero(slots))
        config = {
            **config,
            "num_key_value_heads": n_kv,
            "num_query_heads": n_kv * n_slots,
            "head_dim": int(np.count_nonzero(dims)),
        }
        return config, _back(layer, weights, w)

    def zero_units(self, layer, weights, gone):
        w = _named(layer, weights)
        q_in, v_in, k_in = (list(gone.inputs) + [None, None, None])[:3]
        k_in = v_in if k_in is None else k_in
        kv, slots, dims = gone.internal["kv_heads"], gone.internal["query_heads"], gone.internal["head_dims"]
        kept = self._query_heads(layer, None if kv is None else ~kv, None if slots is None else ~slots)
        heads = None if kept is None else ~kept
        for part, rows, cols in (("query", q_in, heads), ("key", k_in, kv), ("value", v_in, kv), ("gate", q_in, heads)):
            if f"{part}/kernel" not in w:
                continue
            w[f"{part}/kernel"] = _zero(_zero(_zero(w[f"{part}/kernel"], 0, rows), 1, cols), 2, dims)
            if f"{part}/bias" in w:
                w[f"{part}/bias"] = _zero(_zero(w[f"{part}/bias"], 0, cols), 1, dims)
        w["attention_output/kernel"] = _zero(
            _zero(_zero(w["attention_output/kernel"], 0, heads), 1, dims), 2, gone.outputs[0]
        )
        if "attention_output/bias" in w:
            w["attention_output/bias"] = _zero(w["attention_output/bias"], 0, gone.outputs[0])
        return _back(layer, weights, w)

    def unit_weights(self, layer, weights, internal):
        w = _named(layer, weights)
        q, k, v, o = (np.asarray(w[f"{p}/kernel"]) for p in ("query", "key", "value", "attention_output"))
        gate = [np.asarray(w["gate/kernel"])] if "gate/kernel" in w else []
        n_kv = self._kv_heads(layer)
        repeats = self._heads(layer) // n_kv
        per_query = [np.moveaxis(a, 1, 0) for a in [q] + gate] + [o]  # (query heads, ...)
        per_query = np.concatenate([p.reshape(p.shape[0], -1) for p in per_query], axis=1)
        if internal == "kv_heads":
            own = np.concatenate([np.moveaxis(a, 1, 0).reshape(n_kv, -1) for a in (k, v)], axis=1)
            return np.concatenate([own, per_query.reshape(n_kv, -1)], axis=1)
        if internal == "query_heads":
            return np.moveaxis(per_query.reshape(n_kv, repeats, -1), 1, 0).reshape(repeats, -1)
        if internal == "head_dims":
            parts = [np.moveaxis(a, -1, 0) for a in [q, k, v] + gate] + [np.moveaxis(o, 1, 0)]
            return np.concatenate([p.reshape(p.shape[0], -1) for p in parts], axis=1)
        return None

    def unit_activations(self, layer, args, kwargs):
        """Per key/value head and per query slot: the RMS of their query heads' summed
        contribution to the output, per position; per head dimension: the same over every
        head's dimension."""
        xq, _, xv, probs = self._activity(layer, args, kwargs)
        w = _named(layer, _weights_in_order(layer))
        n_kv, heads = self._kv_heads(layer), self._heads(layer)
        v = np.repeat(_project(xv, w["value/kernel"], w.get("value/bias")), heads // n_kv, axis=2)
        context = np.einsum("bnts,bsnh->btnh", probs, v)
        if "gate/kernel" in w:
            context = context / (1.0 + np.exp(-_project(xq, w["gate/kernel"], w.get("gate/bias"))))
        per_head = np.einsum("btnh,nho->btno", context, w["attention_output/kernel"])
        b, t = per_head.shape[:2]
        grouped = per_head.reshape(b, t, n_kv, heads // n_kv, -1)
        per_dim = np.einsum("btnh,nho->btho", context, w["attention_output/kernel"])
        return {
            "kv_heads": _rms(grouped.sum(axis=3)),
            "query_heads": _rms(grouped.sum(axis=2)),
            "head_dims": _rms(per_dim),
        }


def _weights_in_order(layer) -> dict:
    """``{index: array}`` of a layer's variables in order (what :func:`_named` maps to roles)."""
    return {str(i): v for i, v in enumerate(layer.get_weights())}

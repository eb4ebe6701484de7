"""The Keras loan-default model, with its preprocessing inside.

Normalization (global mean and variance) and StringLookup (global vocabulary)
layers are part of the model, so the saved `.keras` file scores raw applicant
columns. The layers are built from the merged federation statistics, which
makes every bank's model identical without any bank seeing another's rows.

Monotone by construction. The schema's `[monotone]` features (and `[order]`
columns) enter the model so that its probability of default (PD) can only move
in the declared direction, whatever values its weights hold:

1. Every constrained feature becomes input slots that are non-decreasing along
   its declared direction: a numeric column is standardised (a positive scale)
   and multiplied by its direction (+1 or -1, `Orient`); an ordered category is
   a set of steps 1[level >= threshold] along its order, times its direction
   (`OrdinalSteps`). A missing value (the mean) or an unknown category (its own
   unconstrained indicator) is not a point of the order.
2. The first hidden layer uses |w| for the weights of those slots and free
   weights for every other input (`MonotoneDense`): each unit's pre-activation
   is non-decreasing in every constrained slot.
3. Every later hidden layer uses |w| for all its weights. The output layer
   sees the last hidden layer (|w|) and the features themselves (|w| for the
   constrained slots, free weights for the others: a monotone linear part
   beside the network). The activations (ReLU, min(z, 0) for the concave half
   of the units, the output's sigmoid) are non-decreasing; dropout is the
   identity when scoring.

A composition of non-decreasing maps with non-negative weights is
non-decreasing, so for any fixed value of the other features the PD is
non-decreasing in each constrained slot (the free inputs do not depend on a
constrained feature); moving a feature along its declared direction raises
each of its slots or leaves it, so the PD moves that way too. The absolute
value is taken inside the forward pass, so the argument holds for every
weight vector: a FedAvg mean, a robust aggregate, a FedAdam step, a bank's DP
noise or a fine-tuned head can turn a stored weight negative, and the model
still computes with its absolute value. Nothing needs
projecting, neither at the bank (on set_weights) nor at the coordinator (before
evaluating or saving), and the saved `.keras` file stays monotone. The concave
half (min(z, 0)) lets the network bend both ways; with ReLU alone it could only
be convex in the constrained features.
"""

from __future__ import annotations

import os
import warnings
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from fedcredit.core.dpsgd import DpSgd, DpSgdLoop
from fedcredit.core.stats import Preprocessing

# Keras 3.15 reads variables with np.array(), which NumPy 2.4 flags on every weight read and save;
# harmless, and a 400-character line in every ServerApp and bank log.
warnings.filterwarnings(
    "ignore", message="__array__ implementation doesn't accept a copy keyword", category=DeprecationWarning
)

if TYPE_CHECKING:
    from fedcredit.core.config import RunConfig
    from fedcredit.core.schema import Schema


@keras.saving.register_keras_serializable(package="fedcredit")
class FillMissing(keras.layers.Layer):
    """Replace NaN (missing numeric value) by 0, the global mean after normalisation."""

    def call(self, inputs):
        return keras.ops.where(keras.ops.isnan(inputs), keras.ops.zeros_like(inputs), inputs)


@keras.saving.register_keras_serializable(package="fedcredit")
class Orient(keras.layers.Layer):
    """Multiply each standardised numeric column by its monotone direction, so the PD must not fall along any.

    `directions`: per numeric column +1 (PD increasing in it), -1 (decreasing),
    0 (unconstrained: passed as is). The model's record of which numeric
    columns are constrained, and how (`monotone_directions`).
    """

    def __init__(self, directions: Sequence[int], **kwargs) -> None:
        super().__init__(**kwargs)
        self.directions = [int(d) for d in directions]

    def call(self, inputs):
        signs = keras.ops.convert_to_tensor([float(d or 1) for d in self.directions], dtype=inputs.dtype)
        return inputs * signs

    def get_config(self) -> dict:
        return {**super().get_config(), "directions": self.directions}


@keras.saving.register_keras_serializable(package="fedcredit")
class OrdinalSteps(keras.layers.Layer):
    """An ordered category's index (StringLookup: 0 unknown, 1.. its order) as [unknown, step_1, .., step_m].

    step_j = direction * (1[index >= thresholds[j]] - 1/2) is non-decreasing
    along the order (times the direction, +1 or -1; 0: unconstrained); each
    step carries the move between two neighbouring levels and learns as fast
    as a one-hot level (steps scaled down by their count trained too slowly
    in 15 epochs: benchmarks/README.md#monotone-constraints). A level without
    a threshold of its own (too rare in the federation to be learned) shares
    the code of the nearest lower level that has one, so it keeps its place in
    the order; an unknown value has the lowest level's steps and its own
    indicator, which is not constrained.
    """

    def __init__(self, thresholds: Sequence[int], direction: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.thresholds = [int(t) for t in thresholds]
        self.direction = int(direction)

    def call(self, index):
        index = keras.ops.cast(index, "int32")
        unknown = keras.ops.cast(keras.ops.equal(index, 0), "float32")
        if not self.thresholds:  # one known level (or none): nothing to step over
            return unknown
        at_least = keras.ops.greater_equal(index, keras.ops.convert_to_tensor([self.thresholds], dtype="int32"))
        steps = (keras.ops.cast(at_least, "float32") - 0.5) * float(self.direction or 1)
        return keras.ops.concatenate([unknown, steps], axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "thresholds": self.thresholds, "direction": self.direction}


@keras.saving.register_keras_serializable(package="fedcredit")
class MonotoneDense(keras.layers.Dense):
    """A Dense layer that computes with |w| for its constrained input rows and has a concave half.

    `constrained`: per input row, whether its weights act as their absolute
    value (None: every row). `concave`: the last `concave` units apply
    -activation(-z) (for ReLU: min(z, 0)) instead of activation(z); both are
    non-decreasing. The stored kernel may hold any values (an aggregate, DP
    noise): the absolute value is taken here, on every call.
    """

    def __init__(self, units: int, constrained: Sequence[bool] | None = None, concave: int = 0, **kwargs) -> None:
        super().__init__(units, **kwargs)
        self.constrained = None if constrained is None else [bool(c) for c in constrained]
        self.concave = int(concave)

    def effective_kernel(self):
        """The kernel the layer computes with: |w| in the constrained rows."""
        if self.constrained is None:
            return keras.ops.abs(self.kernel)
        mask = keras.ops.convert_to_tensor([[c] for c in self.constrained], dtype="bool")
        return keras.ops.where(mask, keras.ops.abs(self.kernel), self.kernel)

    def call(self, inputs, training=None):
        x = keras.ops.matmul(inputs, self.effective_kernel())
        if self.bias is not None:
            x = keras.ops.add(x, self.bias)
        if self.activation is None:
            return x
        if not self.concave:
            return self.activation(x)
        convex = self.units - self.concave
        return keras.ops.concatenate([self.activation(x[:, :convex]), -self.activation(-x[:, convex:])], axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "constrained": self.constrained, "concave": self.concave}


class _Anchor:
    """FedProx state kept outside Keras tracking, so it never enters get_weights() or the saved file."""

    def __init__(self, variables: Sequence[tf.Variable]) -> None:
        self.mu = tf.Variable(0.0, trainable=False, dtype="float32")
        self.weights = [tf.Variable(v, trainable=False) for v in variables]


@keras.saving.register_keras_serializable(package="fedcredit")
class ProximalHead(keras.Model):
    """The trainable part of the model (features -> PD), with FedProx's proximal term.

    loss = data loss + mu/2 * ||w - w_global||^2 over the trainable weights,
    with mu and w_global held in variables so that changing them never
    retraces the training step; mu = 0 (or no anchor) is plain training.
    """

    _anchor: _Anchor | None = None  # a plain object: Keras tracks neither it nor its variables

    def anchor(self) -> _Anchor:
        """The head's FedProx state (created on first use, one per head)."""
        if self._anchor is None:
            self._anchor = _Anchor(self.trainable_variables)
        return self._anchor

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        anchor = self._anchor
        if training and anchor is not None:
            distance = tf.add_n(
                [tf.reduce_sum(tf.square(w - a)) for w, a in zip(self.trainable_variables, anchor.weights)]
            )
            loss = loss + 0.5 * anchor.mu * distance
        return loss


@dataclass(frozen=True)
class ModelSpec:
    """What `build_model` needs besides the federation's statistics: columns, architecture, seed.

    Every bank and the coordinator build the same model from the same spec
    and statistics; `learning_rate` is what a `Trainer` compiles with.
    """

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    hidden_units: tuple[int, ...]
    dropout: float
    l2: float
    learning_rate: float
    seed: int
    # Ordered categorical columns (values lowest first) and monotone features (+1 / -1): empty, the plain MLP.
    order: tuple[tuple[str, tuple[str, ...]], ...] = ()
    monotone: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, cfg: RunConfig, schema: Schema) -> ModelSpec:
        """The spec a run config and schema describe: the schema's features less `excluded-features`.

        Protected attributes are never among them (the schema refuses a
        protected column that is also a feature). `schema` may be the whole
        schema or `banks.schema_of(cfg)`, which already leaves the excluded
        features out: either gives the same spec. `monotone-constraints` =
        false: without orders or directions.
        """
        excluded = set(cfg.excluded)
        constrained = cfg.monotone_constraints
        return cls(
            numeric=tuple(c for c in schema.numeric if c not in excluded),
            categorical=tuple(c for c in schema.categorical if c not in excluded),
            hidden_units=tuple(cfg.hidden_layers),
            dropout=cfg.dropout,
            l2=cfg.l2,
            learning_rate=cfg.learning_rate,
            seed=cfg.seed,
            order=tuple((c, v) for c, v in schema.order if c not in excluded) if constrained else (),
            monotone=tuple((c, d) for c, d in schema.directions.items() if c not in excluded) if constrained else (),
        )


@dataclass(frozen=True)
class FitOptions:
    """How one `Trainer.fit` trains: epochs, batch size, class weight, seed, FedProx's mu and DP-SGD.

    `dp`: train with DP-SGD (`fedcredit.core.dpsgd`: Poisson-sampled batches of
    expected size `batch_size`, per-example clipping and noise); None: Keras's
    own fit with shuffled batches.
    """

    epochs: int
    batch_size: int
    positive_weight: float = 1.0
    seed: int = 0
    proximal_mu: float = 0.0
    dp: DpSgd | None = None


def build_model(prep: Preprocessing, spec: ModelSpec) -> keras.Model:
    """An MLP over standardised numerics, one-hot categoricals (unknown values share one slot) and ordered steps.

    With monotone features in the spec, the head is the construction of the
    module docstring; without, a plain ReLU MLP.
    """
    keras.utils.set_random_seed(spec.seed)
    numeric, categorical = spec.numeric, spec.categorical
    orders, directions = dict(spec.order), dict(spec.monotone)
    inputs: dict[str, keras.KerasTensor] = {}
    parts = []
    constrained: list[bool] = []  # per feature slot: does the PD have to be non-decreasing in it?
    if numeric:
        for col in numeric:
            inputs[col] = keras.Input(shape=(1,), name=col, dtype="float32")
        x = (
            keras.layers.Concatenate(name="numeric")([inputs[c] for c in numeric])
            if len(numeric) > 1
            else inputs[numeric[0]]
        )
        x = keras.layers.Normalization(
            mean=[prep.mean[c] for c in numeric],
            variance=[prep.variance[c] for c in numeric],
            name="standardise",
        )(x)
        x = FillMissing(name="impute_mean")(x)
        if any(c in directions for c in numeric):
            x = Orient([directions.get(c, 0) for c in numeric], name="orient")(x)
        parts.append(x)
        constrained += [c in directions for c in numeric]
    for col in categorical:
        inputs[col] = keras.Input(shape=(1,), name=col, dtype="string")
        if col in orders:
            part, slots = _ordered(inputs[col], col, orders[col], set(prep.vocabulary[col]), directions.get(col, 0))
            parts.append(part)
            constrained += slots
            continue
        vocabulary = list(prep.vocabulary[col]) or ["<none>"]  # "<none>": every category is rare, only unknown
        lookup = keras.layers.StringLookup(
            vocabulary=vocabulary, num_oov_indices=1, output_mode="one_hot", name=f"onehot_{col}"
        )
        parts.append(lookup(inputs[col]))
        constrained += [False] * (len(vocabulary) + 1)
    # The trainable head starts at the layer named "features".
    x = (
        keras.layers.Concatenate(name="features")(parts)
        if len(parts) > 1
        else keras.layers.Identity(name="features")(parts[0])
    )
    if x.shape[-1] != len(constrained):  # cannot happen: one flag per slot
        raise AssertionError(f"{x.shape[-1]} feature slots but {len(constrained)} constraint flags")
    reg = keras.regularizers.L2(spec.l2) if spec.l2 > 0 else None
    monotone = any(constrained)
    features = x
    for i, units in enumerate(spec.hidden_units):
        if monotone:
            x = MonotoneDense(
                units,
                constrained=constrained if i == 0 else None,
                concave=units // 2,
                activation="relu",
                kernel_regularizer=reg,
                kernel_initializer=_monotone_init(FIRST_INIT_SCALE if i == 0 else LATER_INIT_SCALE),
                name=f"hidden_{i}",
            )(x)
        else:
            x = keras.layers.Dense(units, activation="relu", kernel_regularizer=reg, name=f"hidden_{i}")(x)
        if spec.dropout > 0:
            x = keras.layers.Dropout(spec.dropout, name=f"dropout_{i}")(x)
    if monotone:
        # The output sees the last hidden layer and, beside it, the features themselves: a monotone linear part.
        rows = constrained
        if spec.hidden_units:
            rows = [True] * spec.hidden_units[-1] + constrained
            x = keras.layers.Concatenate(name="hidden_and_features")([x, features])
        out = MonotoneDense(
            1, constrained=rows, activation="sigmoid", kernel_initializer=_monotone_init(LATER_INIT_SCALE), name="pd"
        )(x)
    else:
        out = keras.layers.Dense(1, activation="sigmoid", name="pd")(x)
    return keras.Model(inputs=inputs, outputs=out, name="fedcredit")


# Initial weight scales of the monotone head, as multiples of Glorot's variance. With |w| every path adds
# with the same sign, so Glorot's scale (made for weights of random sign) starts the PDs spread over
# [0.02, 1]; scaled down, the model starts near-flat as the plain MLP does and trains to a higher hold-out
# AUC within the default 15 epochs (benchmarks/README.md#monotone-constraints).
FIRST_INIT_SCALE = 0.3
LATER_INIT_SCALE = 0.1


def _monotone_init(scale: float) -> keras.initializers.Initializer:
    return keras.initializers.VarianceScaling(scale, mode="fan_avg", distribution="uniform")


def _ordered(
    column: keras.KerasTensor, col: str, levels: Sequence[str], kept: set[str], direction: int
) -> tuple[keras.KerasTensor, list[bool]]:
    """An ordered column's steps and their constraint flags: one step per level the federation knows, but the first.

    A level too rare to be in the vocabulary gets no step of its own and
    scores as the nearest lower level that has one (the model holds nothing
    learned from its few rows); a value outside the order scores as unknown.
    """
    lookup = keras.layers.StringLookup(
        vocabulary=list(levels), num_oov_indices=1, output_mode="int", name=f"ordinal_{col}"
    )
    thresholds = [i + 1 for i, level in enumerate(levels) if level in kept][1:]
    steps = OrdinalSteps(thresholds, direction, name=f"steps_{col}")(lookup(column))
    return steps, [False] + [direction != 0] * len(thresholds)


def numeric_columns(model: keras.Model) -> list[str]:
    """The model's numeric inputs in the order its `standardise` layer holds their means."""
    try:
        return [t.name for t in model.get_layer("numeric").input]
    except ValueError:  # at most one numeric column: no Concatenate layer
        return [t.name for t in model.inputs if t.dtype != "string"]


def monotone_directions(model: keras.Model) -> dict[str, int]:
    """Feature -> +1 / -1 for every monotone constraint the model holds by construction (empty: none)."""
    directions: dict[str, int] = {}
    try:
        orient = model.get_layer("orient")
    except ValueError:
        orient = None
    if orient is not None:
        directions.update({c: d for c, d in zip(numeric_columns(model), orient.directions, strict=True) if d})
    for layer in model.layers:
        if isinstance(layer, OrdinalSteps) and layer.direction:
            directions[layer.name.removeprefix("steps_")] = layer.direction
    return directions


def ordered_levels(model: keras.Model) -> dict[str, list[str]]:
    """Ordered categorical column -> its levels, lowest first, as the model reads them."""
    return {
        layer.name.removeprefix("ordinal_"): [str(v) for v in layer.get_vocabulary()[1:]]
        for layer in model.layers
        if isinstance(layer, keras.layers.StringLookup) and layer.name.startswith("ordinal_")
    }


CHUNK_ROWS = 65_536  # rows made into model inputs at a time: bounds memory whatever a bank's size
HELD_FEATURES_BYTES = 128 << 20  # a bank's training features are kept across epochs up to this size, else streamed


@dataclass(frozen=True)
class FrameRows:
    """Rows kept as a frame and made into model inputs `CHUNK_ROWS` at a time.

    How a bank hands its rows to `Trainer` and `predict`: memory then holds
    one chunk's inputs (strings as TensorFlow tensors take ~40 bytes a cell),
    not every row's. Scores are the whole frame's to the last bit, as
    `predict` scores in chunks of the same size anyway.
    """

    frame: pd.DataFrame

    def __len__(self) -> int:
        return len(self.frame)

    def chunks(self, model: keras.Model) -> Iterator[dict[str, tf.Tensor]]:
        """The model inputs of consecutive chunks of rows, in the frame's order."""
        for start in range(0, max(len(self.frame), 1), CHUNK_ROWS):  # an empty frame too: to_inputs checks its columns
            yield to_inputs(self.frame.iloc[start : start + CHUNK_ROWS], model)


class Trainer:
    """Trains a fedcredit model, freshly built or loaded from a `.keras` file.

    Preprocessing (standardisation, one-hot lookup) has no trainable weights,
    so a bank computes its rows' `features` once and trains only the head
    (the layers after "features", shared with the model) on them: the same
    arithmetic as training the whole model, without gathering and looking up
    string columns again in every epoch. The optimizer state lives here, not
    in the saved model, so a reloaded model trains again from a fresh one.
    """

    def __init__(self, model: keras.Model, learning_rate: float, layers: str = "all") -> None:
        """`layers`: "all" trains every dense layer; "head" only the output layer (fine-tuning)."""
        if layers not in ("all", "head"):
            raise ValueError(f"layers must be 'all' or 'head', got {layers!r}")
        try:
            features = model.get_layer("features").output
        except ValueError as err:
            raise ValueError(
                f"model {model.name!r} has no layer named 'features', so it is not a fedcredit model: "
                "build it with build_model or load a .keras file that fedcredit saved"
            ) from err
        self.model = model
        for layer in model.layers:
            if isinstance(layer, keras.layers.Dense):
                layer.trainable = layers == "all" or layer.name == "pd"
        self._features = keras.Model(inputs=model.inputs, outputs=features, name="fedcredit_features")
        self.head = ProximalHead(inputs=features, outputs=model.outputs, name="fedcredit_head")
        self._anchor = self.head.anchor()
        self.head.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=keras.losses.BinaryCrossentropy())
        # Build the optimizer now and remember its pristine state (step 0, zero
        # moments, the configured learning rate) for `reset`.
        self.head.optimizer.build(self.head.trainable_variables)
        self._optimizer_init = [np.array(v.numpy()) for v in self.head.optimizer.variables]
        self._dp_loop: DpSgdLoop | None = None  # built on the first DP-SGD fit

    def weights_only_loss(self) -> tf.Tensor:
        """The loss terms that depend on the weights only: L2 penalties and FedProx's proximal term."""
        terms = [tf.convert_to_tensor(loss) for loss in self.head.losses]
        distance = tf.add_n(
            [tf.reduce_sum(tf.square(w - a)) for w, a in zip(self.head.trainable_variables, self._anchor.weights)]
        )
        return tf.add_n([*terms, 0.5 * self._anchor.mu * distance])

    def reset(self, seed: int) -> None:
        """Forget everything a previous fit left behind in this process.

        A model reused across messages carries its optimizer's moments and step
        count (maybe from another bank) and its dropout generators' positions;
        restoring them and reseeding makes a train message's result depend only
        on the global weights, the bank's rows and the seed.
        """
        for var, value in zip(self.head.optimizer.variables, self._optimizer_init, strict=True):
            var.assign(value)
        keras.utils.set_random_seed(seed)
        for i, layer in enumerate(self.model.layers):
            gen = getattr(layer, "seed_generator", None)
            if gen is not None:
                gen.state.assign(np.array([seed + i, 0], dtype=gen.state.dtype))

    def features(self, inputs: Mapping[str, tf.Tensor] | tf.Tensor) -> tf.Tensor:
        """Standardised numerics and one-hot categoricals: what the trainable head sees.

        A bank computes them once for its rows (they depend only on the
        federation's statistics) and trains on them round after round.
        """
        if isinstance(inputs, tf.Tensor):
            return inputs
        if isinstance(inputs, FrameRows):
            return tf.concat([self.features(part) for part in inputs.chunks(self.model)], axis=0)
        return self._features(dict(inputs), training=False)

    @property
    def width(self) -> int:
        """Features per row: standardised numerics plus one column per category level."""
        return int(self.head.inputs[0].shape[-1])

    def holds(self, rows: int) -> bool:
        """Whether `rows` rows' features fit `HELD_FEATURES_BYTES` (kept across epochs) or are streamed."""
        return rows * self.width * 4 <= HELD_FEATURES_BYTES

    def stream(self, rows: FrameRows, labels: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
        """Shuffled batches of (features, label), made a chunk of rows at a time; each epoch its own order.

        Batches are consecutive slices of one permutation of all rows per
        epoch, as `fit(shuffle=True)` draws them, so streamed and held
        training differ only in which permutation.
        """
        epochs, y = itertools.count(), labels.astype(np.float32)
        per_chunk = max(1, CHUNK_ROWS // batch_size) * batch_size

        def batches():
            order = np.random.default_rng([seed, next(epochs)]).permutation(len(rows))
            for start in range(0, len(order), per_chunk):
                take = order[start : start + per_chunk]
                features = self._features(to_inputs(rows.frame.iloc[take], self.model), training=False)
                for at in range(0, len(take), batch_size):
                    yield features[at : at + batch_size], y[take[at : at + batch_size]]

        spec = (tf.TensorSpec((None, self.width), tf.float32), tf.TensorSpec((None,), tf.float32))
        steps = -(-len(rows) // batch_size)  # known, so that Keras runs every epoch, not just the first
        data = tf.data.Dataset.from_generator(batches, output_signature=spec)
        return data.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(2)

    def fit(
        self,
        weights: Sequence[np.ndarray],
        inputs: Mapping[str, tf.Tensor] | tf.Tensor,
        labels: np.ndarray,
        options: FitOptions,
    ) -> float:
        """Train from the given weights; returns the last epoch's training loss.

        `inputs` are raw model inputs (`to_inputs`) or their `features`. With
        proximal_mu > 0 (FedProx) the loss also pulls the weights towards the
        given (global) ones: mu/2 * ||w - w_global||^2. With `options.dp`, the
        same loss trained by DP-SGD (the proximal and L2 terms unclipped: they
        hold no row's data).
        """
        self.model.set_weights(list(weights))
        self.reset(options.seed)
        self._anchor.mu.assign(float(options.proximal_mu))
        for a, w in zip(self._anchor.weights, self.head.trainable_variables):
            a.assign(w)
        if options.dp is not None:
            if self._dp_loop is None:
                self._dp_loop = DpSgdLoop(self.head, self.weights_only_loss)
            features = tf.convert_to_tensor(self.features(inputs))
            return self._dp_loop.fit(
                features,
                labels,
                options.epochs,
                options.batch_size,
                options.dp,
                options.positive_weight,
                options.seed,
            )
        class_weight = {0: 1.0, 1: float(options.positive_weight)} if options.positive_weight != 1.0 else None
        if isinstance(inputs, FrameRows) and not self.holds(len(inputs)):
            data = self.stream(inputs, labels, options.batch_size, options.seed)
            hist = self.head.fit(data, epochs=options.epochs, class_weight=class_weight, shuffle=False, verbose=0)
            return float(hist.history["loss"][-1])
        hist = self.head.fit(
            self.features(inputs),
            tf.constant(labels.astype(np.float32)),
            epochs=options.epochs,
            batch_size=options.batch_size,
            shuffle=True,
            class_weight=class_weight,
            verbose=0,
        )
        return float(hist.history["loss"][-1])


def to_inputs(frame: pd.DataFrame, model: keras.Model) -> dict[str, tf.Tensor]:
    """Model inputs from a raw DataFrame, by the model's own input names and types.

    Every input is a TensorFlow tensor: Keras rejects numpy object (string)
    arrays, and with a mix of numpy and TF inputs `fit(shuffle=True)`
    shuffles them differently, silently misaligning rows and labels.
    """
    missing = [t.name for t in model.inputs if t.name not in frame.columns]
    if missing:
        raise KeyError(f"columns {missing} are missing: the model needs {[t.name for t in model.inputs]}")
    out = {}
    for tensor in model.inputs:
        col = frame[tensor.name]
        if tensor.dtype == "string":
            values = col.fillna("").astype(str).to_numpy(dtype=object)
        else:
            values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float32)
        out[tensor.name] = tf.constant(values.reshape(-1, 1))
    return out


def predict(
    model: keras.Model, inputs: Mapping[str, tf.Tensor] | FrameRows, batch_size: int = CHUNK_ROWS
) -> np.ndarray:
    """Scores by calling the model directly: no per-shape tracing as in `Model.predict`."""
    if isinstance(inputs, FrameRows):
        parts = [predict(model, part, batch_size) for part in inputs.chunks(model)]
        return np.concatenate(parts) if parts else np.zeros(0)
    names = list(inputs)
    n = int(inputs[names[0]].shape[0])
    parts = [
        model({k: v[i : i + batch_size] for k, v in inputs.items()}, training=False) for i in range(0, n, batch_size)
    ]
    return np.concatenate([np.asarray(p).ravel() for p in parts]).astype(np.float64) if parts else np.zeros(0)


def score(model: keras.Model, frame: pd.DataFrame) -> np.ndarray:
    """Probability of default for each row of a raw applicant DataFrame (made into inputs a chunk at a time)."""
    return predict(model, FrameRows(frame))


class ModelFileError(ValueError):
    """A model file that does not exist or cannot be loaded; the message names the file, why and how to fix it."""


RECOPY = (
    "copy it again from the run directory that wrote it (history.json there records model-final.keras's "
    "SHA-256 as model-final-sha256, to check the copy)"
)


def _zip_problem(path: Path) -> str | None:
    """Why a `.keras` file (a zip archive) is damaged, or None when every member reads back with its CRC."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        return f"it is not a complete zip archive ({' '.join(str(err).split())})"
    return None if bad is None else f"its member {bad} fails its CRC check"


def load(path: str | Path) -> keras.Model:
    """Load a saved fedcredit model (importing this module registers its layers).

    A missing file and a damaged one (truncated by an interrupted copy, say) raise
    `ModelFileError`, each with its own message; Keras itself calls both "File not found".
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist: check the path")
    if not path.is_file():
        raise ModelFileError(f"model file {path} is not a file: give the .keras file, e.g. RUN_DIR/model-final.keras")
    if path.suffix != ".keras":
        raise ModelFileError(
            f"{path} is not a .keras file: give a saved fedcredit model, e.g. RUN_DIR/model-final.keras"
        )
    problem = _zip_problem(path)
    if problem is None:
        try:
            return keras.saving.load_model(str(path))
        except Exception as err:  # Keras raises many types for a damaged or foreign file
            problem = f"Keras cannot load it: {' '.join(str(err).split())[:300]}"
    raise ModelFileError(
        f"{path} is not a valid Keras model file ({problem}); it may be truncated or corrupt: {RECOPY}"
    )

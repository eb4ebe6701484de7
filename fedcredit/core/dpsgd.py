"""DP-SGD at one bank: Poisson-sampled batches, per-example clipping, Gaussian noise (`privacy.dp-sgd = true`).

The mechanism `fedcredit.federation.accounting` accounts for, step by step:

1. every training row joins the step's batch independently with probability
   q = batch-size / rows (Poisson sampling: batch sizes vary, may be empty);
2. each row's gradient of its own (class-weighted) loss, over all trainable
   weights, is computed in one vectorised pass (the Jacobian of the
   per-example losses, `pfor`) and clipped to L2 norm C;
3. the clipped gradients are summed, N(0, (sigma * C)^2) is added to every
   coordinate, and the sum is divided by the expected batch size q * rows
   (a fixed number, so the noise's scale does not depend on the batch drawn);
4. the gradient of what depends on the weights only (the L2 penalty and
   FedProx's proximal term, no row's data) is added without clipping, and the
   optimizer (Adam: post-processing) applies the sum.

The per-example gradients flow through the monotone head's |w| (the forward
pass is the model's own), so the construction stays monotone. Dropout masks
are drawn once per step in the forward pass; row i's loss depends only on
row i, so row i of the Jacobian is row i's gradient.

The noise comes from TensorFlow's Philox generator, the sampling from NumPy,
both seeded by the caller: a real bank passes a seed fresh from the OS
(`fedcredit.federation.client.dp_sgd_seed`); see docs/security.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf


@dataclass(frozen=True)
class DpSgd:
    """The per-example clipping norm C and the noise multiplier sigma of one bank's DP-SGD."""

    clipping_norm: float
    noise_multiplier: float


def per_example_gradients(
    head: keras.Model, x: tf.Tensor, y: tf.Tensor, w: tf.Tensor, variables: Sequence[tf.Variable]
) -> tuple[list[tf.Tensor], tf.Tensor]:
    """([per variable, the gradient of each row's loss: shape (rows, *variable)], the rows' losses)."""
    with tf.GradientTape() as tape:
        p = head(x, training=True)
        losses = w * keras.losses.binary_crossentropy(tf.reshape(y, (-1, 1)), tf.reshape(p, (-1, 1)))
    return tape.jacobian(losses, list(variables), experimental_use_pfor=True), losses


def clipped_sum(grads: Sequence[tf.Tensor], clipping_norm: float) -> tuple[list[tf.Tensor], tf.Tensor]:
    """(sum over rows of each row's gradient clipped to `clipping_norm` (L2 over all variables), the norms)."""
    rows = tf.shape(grads[0])[0]
    squares = tf.add_n([tf.reduce_sum(tf.reshape(g, (rows, -1)) ** 2, axis=1) for g in grads])
    norms = tf.sqrt(squares)
    factor = tf.minimum(1.0, clipping_norm / tf.maximum(norms, 1e-12))
    return [tf.tensordot(factor, g, axes=1) for g in grads], norms


class DpSgdLoop:
    """The DP-SGD training loop of one `Trainer`: built once, its step traced once for any batch size."""

    def __init__(self, head: keras.Model, weights_only_loss) -> None:
        """`weights_only_loss()`: the part of the loss that depends on the weights only (L2, proximal term)."""
        self.head = head
        self.variables = head.trainable_variables
        self.weights_only_loss = weights_only_loss
        self.generator = tf.random.Generator.from_seed(0)
        self.clip = tf.Variable(1.0, trainable=False, dtype="float32")
        self.noise = tf.Variable(0.0, trainable=False, dtype="float32")
        self.expected = tf.Variable(1.0, trainable=False, dtype="float32")

    def noised_gradients(self, summed: Sequence[tf.Tensor]) -> list[tf.Tensor]:
        """(sum + N(0, (sigma C)^2)) / expected batch size, per variable."""
        std = self.noise * self.clip
        return [(s + self.generator.normal(tf.shape(s), stddev=std)) / self.expected for s in summed]

    @tf.function(reduce_retracing=True)
    def _step(self, x: tf.Tensor, y: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
        grads, losses = per_example_gradients(self.head, x, y, w, self.variables)
        summed, _ = clipped_sum(grads, self.clip)
        self._apply(summed)
        return tf.reduce_sum(losses)

    @tf.function
    def _empty_step(self) -> None:
        self._apply([tf.zeros_like(v) for v in self.variables])

    def _apply(self, summed: Sequence[tf.Tensor]) -> None:
        noised = self.noised_gradients(summed)
        with tf.GradientTape() as tape:
            extra = self.weights_only_loss()
        exact = tape.gradient(extra, self.variables)
        total = [n if e is None else n + e for n, e in zip(noised, exact, strict=True)]
        self.head.optimizer.apply(total, self.variables)

    def fit(
        self,
        features: tf.Tensor,
        labels: np.ndarray,
        epochs: int,
        batch_size: int,
        dp: DpSgd,
        positive_weight: float,
        seed: int,
    ) -> float:
        """Train `epochs` x ceil(rows / batch-size) Poisson-sampled steps; the last epoch's mean loss."""
        rows = int(features.shape[0])
        q = min(1.0, batch_size / max(rows, 1))
        self.clip.assign(dp.clipping_norm)
        self.noise.assign(dp.noise_multiplier)
        self.expected.assign(q * rows)
        self.generator.reset_from_seed(seed)
        rng = np.random.default_rng(seed)
        y = labels.astype(np.float32)
        w = np.where(y > 0.5, float(positive_weight), 1.0).astype(np.float32)
        steps = -(-max(rows, 1) // batch_size)
        loss_sum, seen = 0.0, 0
        for _ in range(epochs):
            loss_sum, seen = 0.0, 0
            for _ in range(steps):
                idx = np.flatnonzero(rng.random(rows) < q)
                if idx.size == 0:
                    self._empty_step()
                    continue
                take = tf.constant(idx)
                total = self._step(tf.gather(features, take), tf.constant(y[idx]), tf.constant(w[idx]))
                loss_sum, seen = loss_sum + float(total), seen + idx.size
        return loss_sum / max(seen, 1)

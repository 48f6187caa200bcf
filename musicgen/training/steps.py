"""The training step and what it optimises: the masked loss, the learning-rate schedule, Adam.

Each step function takes the model, optimizer and batch as arguments (nothing captured), for the
caller to wrap in `tf.function`; `musicgen.training.train` runs them.
"""

from __future__ import annotations

from musicgen.config import TrainConfig
from musicgen.data.vocab import PAD
from musicgen.tfsetup import import_tensorflow

tf = import_tensorflow()
# After import_tensorflow, which quiets TensorFlow's start-up logging.
import keras  # noqa: E402

FINAL_LR_FRACTION = 0.1  # the cosine schedule ends at this fraction of the peak learning rate


def loss_sum(targets, logits):
    """(sum of cross-entropy in nats over the targets that are not PAD, number of such targets).

    Args:
        targets: int (batch, time).
        logits: float (batch, time, vocab).

    Returns:
        Two float32 scalars.
    """
    per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=targets, logits=tf.cast(logits, tf.float32)
    )  # (batch, time)
    mask = tf.cast(tf.not_equal(targets, PAD), tf.float32)
    return tf.reduce_sum(per_token * mask), tf.reduce_sum(mask)


def train_step(model, optimizer, step, inputs, targets, batch_chars=None, clip_norm=0.0):
    """One replica's part of one optimiser step; wrap in `tf.function` (through
    `distributed_train_step` under a strategy). Everything it touches comes in as an argument.

    Args:
        model: a musicgen model.
        optimizer: a built Keras optimizer (possibly a LossScaleOptimizer), without clipping of
            its own: Keras would clip each replica's gradients before summing them.
        step: int64 tf.Variable counting steps, incremented with the weights so the two never part.
        inputs: int32 (batch, time): this replica's windows.
        targets: int32 (batch, time).
        batch_chars: characters in the global batch (all replicas together); None: the global
            batch's own non-PAD count, summed over the replicas (padded whole-tune windows).
        clip_norm: clip the summed gradient to this global norm; 0: no clipping.

    Returns:
        This replica's share of the global batch's mean loss in nats per character: the shares
        of all replicas add up to it.
    """
    with tf.GradientTape() as tape:
        logits = model(inputs, training=True)  # (batch, time, vocab)
        total, count = loss_sum(targets, logits)
        if batch_chars is None:
            batch_chars = tf.maximum(_summed_over_replicas(count), 1.0)
        loss = total / batch_chars
        # Multiplied by the loss scale under float16 (LossScaleOptimizer), else unchanged.
        scaled_loss = optimizer.scale_loss(loss)
    gradients = tape.gradient(scaled_loss, model.trainable_variables)
    if clip_norm > 0:
        gradients = clip_summed_gradients(gradients, clip_norm * optimizer.scale_loss(1.0))
    # Sums the replicas' gradients, unscales them (if scaled) and updates the weights.
    optimizer.apply(gradients, model.trainable_variables)
    step.assign_add(1)
    return loss


def _summed_over_replicas(value):
    """`value` summed over the replicas in sync (itself on one device)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(value))


def clip_summed_gradients(gradients, clip_norm):
    """Scales each replica's gradients by the one factor that clips their sum to `clip_norm`.

    The optimizer sums the replicas' gradients after this, so clipping each replica's own would
    clip the wrong vector; the sum is formed here only to measure its norm. On one device the
    sum is the gradient itself.
    """
    context = tf.distribute.get_replica_context()
    summed = gradients
    if context.num_replicas_in_sync > 1:
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
    clipped, _ = tf.clip_by_global_norm(
        gradients, clip_norm, use_norm=tf.linalg.global_norm(summed)
    )
    return clipped


def distributed_train_step(
    strategy, model, optimizer, step, inputs, targets, batch_chars, clip_norm
):
    """`train_step` on every replica of `strategy`; wrap in `tf.function`.

    Args:
        inputs, targets: per-replica batches from a distributed dataset (or plain tensors under
            the default strategy).

    Returns:
        The global batch's mean loss in nats per character.
    """

    def replica_step(inputs, targets):
        return train_step(model, optimizer, step, inputs, targets, batch_chars, clip_norm)

    losses = strategy.run(replica_step, args=(inputs, targets))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)


def eval_step(model, inputs, targets):
    """(summed cross-entropy in nats, number of characters) for one batch; wrap in `tf.function`."""
    logits = model(inputs, training=False)  # (batch, time, vocab)
    return loss_sum(targets, logits)


def learning_rate_schedule(train_config: TrainConfig):
    """Linear warmup to `learning_rate` over `warmup_steps`, then a cosine down to
    FINAL_LR_FRACTION of it at `steps`.

    Returns:
        A Keras LearningRateSchedule: call it with a step to get the rate.
    """
    peak = train_config.learning_rate
    warmup = max(0, min(train_config.warmup_steps, train_config.steps - 1))
    return keras.optimizers.schedules.CosineDecay(
        # Starts at peak / (warmup + 1) rather than 0, so the very first step already learns.
        initial_learning_rate=peak / (warmup + 1) if warmup else peak,
        decay_steps=max(1, train_config.steps - warmup),
        alpha=FINAL_LR_FRACTION,
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )


def make_optimizer(train_config: TrainConfig, *, loss_scale: bool = False):
    """Adam on `learning_rate_schedule`. It does not clip: `train_step` clips the summed gradient.

    Args:
        train_config: learning rate, warmup and steps.
        loss_scale: wrap in a LossScaleOptimizer (needed for float16, not for bfloat16).
    """
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate_schedule(train_config))
    return keras.optimizers.LossScaleOptimizer(optimizer) if loss_scale else optimizer

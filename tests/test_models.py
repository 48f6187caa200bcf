import numpy as np
import pytest

from musicgen.config import ModelConfig
from musicgen.models import build_model
from musicgen.tfsetup import import_tensorflow

tf = import_tensorflow()


@pytest.fixture(scope="module")
def model():
    tf.keras.utils.set_random_seed(7)
    built = build_model(ModelConfig(vocab_size=30, embedding_dim=8, units=16, layers=2))
    built(tf.zeros((1, 1), tf.int32))
    return built


def test_cpu_sequence_path_equals_keras_lstm_layers(model):
    # The CPU path reads the layers' weights directly; the Keras layers (cuDNN on a GPU) must agree.
    ids = tf.constant(np.random.default_rng(0).integers(4, 30, (3, 25)), tf.int32)
    state = model.initial_state(3)
    ours, ours_state = model(ids, state=state, return_state=True)
    model.use_cudnn = True
    try:
        keras_logits, keras_state = model(ids, state=state, return_state=True)
    finally:
        model.use_cudnn = False
    np.testing.assert_allclose(ours.numpy(), keras_logits.numpy(), atol=1e-5)
    for (h1, c1), (h2, c2) in zip(ours_state, keras_state):
        np.testing.assert_allclose(h1.numpy(), h2.numpy(), atol=1e-5)
        np.testing.assert_allclose(c1.numpy(), c2.numpy(), atol=1e-5)


def test_step_by_step_equals_the_full_pass_and_state_carries(model):
    ids = tf.constant(np.random.default_rng(1).integers(4, 30, (2, 12)), tf.int32)
    full = model(ids).numpy()
    state = model.initial_state(2)
    for t in range(12):
        logits, state = model.step(ids[:, t], state)
        np.testing.assert_allclose(logits.numpy(), full[:, t], atol=1e-5)
    # Two halves with the state passed between them equal one pass.
    first, carried = model(ids[:, :5], return_state=True)
    second = model(ids[:, 5:], state=carried)
    np.testing.assert_allclose(second.numpy(), full[:, 5:], atol=1e-5)


def test_weights_have_stable_names_and_gradients_reach_every_weight(model):
    names = [w.path.split("/", 1)[1] for w in model.weights]
    assert "lstm_0/lstm_cell/kernel" in names and "logits/kernel" in names
    ids = tf.constant([[4, 5, 6, 7]], tf.int32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model(ids, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads)

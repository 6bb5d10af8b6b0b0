"""libml/optimizers.py: Adam and SGD against Keras' own, the learning-rate schedule, and an SGD
run through the trainer."""
import math

import numpy as np
import pytest

import libml  # noqa: F401
import keras
import tensorflow as tf

from conftest import make_ssl_dataset
from libml import datasets, optimizers, train


@pytest.mark.parametrize('name', ['adam', 'sgd'])
def test_updates_match_keras(name):
    rng = np.random.default_rng(0)
    start = rng.normal(size=[3, 4]).astype(np.float32)
    ours, theirs = tf.Variable(start), tf.Variable(start)
    mine = optimizers.build(name, [ours], momentum=0.9, nesterov=True)
    keras_opt = (keras.optimizers.Adam(0.01, epsilon=1e-8) if name == 'adam'
                 else keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True))
    for _ in range(5):
        g = tf.constant(rng.normal(size=[3, 4]).astype(np.float32))
        mine.apply([g], [ours], tf.constant(0.01))
        keras_opt.apply_gradients([(g, theirs)])
    # Keras' Adam puts epsilon outside the bias correction (as ours): the same up to rounding.
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)
    assert int(mine.updates.numpy()) == 5


def test_cosine_schedule():
    assert float(optimizers.learning_rate(0.03, 'constant', 500, 1000)) == pytest.approx(0.03)
    assert float(optimizers.learning_rate(0.03, 'cosine', 0, 1000)) == pytest.approx(0.03)
    assert float(optimizers.learning_rate(0.03, 'cosine', 1000, 1000)) == pytest.approx(
        0.03 * math.cos(7 * math.pi / 16))
    assert float(optimizers.learning_rate(0.03, 'cosine', 500, 1000)) == pytest.approx(
        0.03 * math.cos(7 * math.pi / 32))


def test_sgd_cosine_run_trains_and_names_its_run(ml_data, tmp_path):
    import realmix
    name = make_ssl_dataset(str(ml_data)) + '-6'
    config = train.Config(train_dir=str(tmp_path), batch=8, filters=4, repeat=1, train_kimg=1,
                          report_kimg=1, save_kimg=1, augment='svhn', optimizer='sgd', lr=0.03,
                          wd=5e-4, lr_schedule='cosine')
    dataset = datasets.resolve(name)
    trainer = train.Trainer(realmix.RealMix(dataset.nclass, 1), dataset, config)
    for part in ('optimizersgd', 'lr_schedulecosine', 'momentum0.9'):
        assert part in trainer.run_dir
    trainer.restore()
    batches = iter(trainer._batches(0))
    kernel = trainer.model.kernels[0]
    before = kernel.numpy().copy()
    losses = [float(trainer._train_step(next(batches), tf.constant(8.0 * i))['losses/xe'])
              for i in range(20)]
    assert np.all(np.isfinite(losses)) and not np.array_equal(before, kernel.numpy())
    assert isinstance(trainer.optimizer, optimizers.SGD)

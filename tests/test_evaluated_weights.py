"""The evaluated (EMA) model at any run length: decay warm-up, batch-norm statistics, metrics,
labeled sets smaller than the batch, and what checkpoints and inference load."""
import os

import numpy as np
import pytest

from conftest import assert_ok, assert_user_error, make_ssl_dataset, run_script, write_records

import libml  # noqa: F401
import tensorflow as tf
from sklearn import metrics as sklearn_metrics

from libml import datasets, metrics, models, predict, runs, train

import realmix  # at the repository root, on sys.path via conftest
from libml.baselines import Supervised

TINY = dict(batch=8, filters=4, repeat=1, train_kimg=1, report_kimg=1, save_kimg=1,
            augment='svhn', eval_batch=64)


def tiny_trainer(ml_data, tmp_path, algorithm=None, n_label=12, valid=6, **overrides):
    name = make_ssl_dataset(str(ml_data), n_label=n_label, class_names=['a', 'b', 'c'])
    config = train.Config(train_dir=str(tmp_path / 'exp'), **dict(TINY, **overrides))
    dataset = datasets.resolve(f'{name}-{valid}')
    algorithm = algorithm or realmix.RealMix(dataset.nclass, config.train_kimg)
    return train.Trainer(algorithm, dataset, config)


def values(variables):
    return [v.numpy().copy() for v in variables]


@pytest.mark.parametrize('warmup', [True, False])
def test_ema_decay_warms_up_like_tf_moving_average(ml_data, tmp_path, warmup):
    trainer = tiny_trainer(ml_data, tmp_path, algorithm=Supervised(3), ema_warmup=warmup)
    trainer.restore()
    batches = iter(trainer._batches(0))
    ema = values(trainer.ema_model.trainable_variables)
    for t in (1, 2, 3):
        trainer._train_step(next(batches), tf.constant(8.0 * (t - 1)))
        decay = min(0.999, (1 + t) / (10 + t)) if warmup else 0.999
        weights = values(trainer.model.trainable_variables)
        ema = [decay * e + (1 - decay) * w for e, w in zip(ema, weights)]
        for expected, got in zip(ema, values(trainer.ema_model.trainable_variables)):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def batch_moments(x, stem):
    """Mean and unbiased variance per channel of the first batch norm's input (the stem conv)."""
    y = tf.nn.conv2d(tf.cast(x, tf.float32) * (2 / 255) - 1, stem, 1, 'SAME').numpy()
    y = y.reshape(-1, y.shape[-1])
    return y.mean(0), y.var(0, ddof=1)


def test_recompute_batch_norm_averages_batch_statistics_over_images():
    model = models.WideResNet(3, 1, filters=4, repeat=1, scales=1)
    x = np.random.default_rng(0).integers(0, 256, size=(8, 8, 8, 1)).astype(np.uint8)
    bn = model.blocks[0].bn1
    # One batch: exactly the moments of all images; stale values are overwritten.
    bn.moving_mean.assign(tf.fill(bn.moving_mean.shape, 5.0))
    models.recompute_batch_norm(model, x, batch_size=8)
    mean, var = batch_moments(x, model.stem)
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-3)
    # Batches of 5 and 3: batch statistics averaged with weights 5/8 and 3/8.
    models.recompute_batch_norm(model, x, batch_size=5)
    (m1, v1), (m2, v2) = batch_moments(x[:5], model.stem), batch_moments(x[5:], model.stem)
    np.testing.assert_allclose(bn.moving_mean.numpy(), (5 * m1 + 3 * m2) / 8, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), (5 * v1 + 3 * v2) / 8, rtol=1e-3)


def test_each_bn_stats_mode(ml_data, tmp_path):
    for mode in ('recompute', 'debias', 'moving'):
        trainer = tiny_trainer(ml_data, tmp_path / mode, algorithm=Supervised(3), bn_stats=mode)
        trainer.train()
        t = int(trainer.optimizer.updates.numpy())
        assert t == 128
        for bn, ema_bn in zip(trainer.model.batch_norms, trainer.ema_model.batch_norms):
            got = ema_bn.moving_mean.numpy(), ema_bn.moving_variance.numpy()
            trained = bn.moving_mean.numpy(), bn.moving_variance.numpy()
            if mode == 'moving':  # the original: copied as they are
                np.testing.assert_array_equal(got[0], trained[0])
                np.testing.assert_array_equal(got[1], trained[1])
            elif mode == 'debias':
                bias = 0.999 ** t
                np.testing.assert_allclose(got[0], trained[0] / (1 - bias), rtol=1e-5)
                np.testing.assert_allclose(got[1], (trained[1] - bias) / (1 - bias), rtol=1e-5)
        if mode == 'recompute':  # the statistics of the EMA weights on the fixed images
            saved = values(trainer.ema_model.batch_norm_stats)
            models.recompute_batch_norm(trainer.ema_model, trainer._bn_images, 64)
            for a, b in zip(saved, values(trainer.ema_model.batch_norm_stats)):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
            # 12 labeled + the 24 unlabeled training images (6 of 30 are validation).
            assert trainer._bn_images.shape == (36, 8, 8, 1)
    # Departures from the defaults name the run; the default run keeps its old name.
    names = {m: os.listdir(tmp_path / m / 'exp' / 'toy.1@12-6')[0] for m in ('recompute', 'moving')}
    assert 'bn_stats' not in names['recompute'] and 'bn_statsmoving' in names['moving']


def test_checkpoint_and_inference_hold_the_evaluated_model(ml_data, tmp_path):
    trainer = tiny_trainer(ml_data, tmp_path, algorithm=Supervised(3))
    results = trainer.train()
    model, _, prefix = runs.restore_ema_model(trainer.run_dir)
    assert prefix.endswith('model.ckpt-00001024')
    for a, b in zip(values(model.variables), values(trainer.ema_model.variables)):
        np.testing.assert_array_equal(a, b)
    images, labels = trainer.dataset.eval_sets()['test']
    probs = predict.predict(model, images)
    assert 100 * float((probs.argmax(1) == labels).mean()) == results['accuracy_test']


def test_original_behaviour_flags(ml_data, tmp_path):
    """--noema_warmup --bn_stats=moving: plain EMA and the trained model's statistics copied."""
    trainer = tiny_trainer(ml_data, tmp_path, algorithm=Supervised(3), ema_warmup=False,
                           bn_stats='moving')
    trainer.restore()
    start = values(trainer.ema_model.trainable_variables)
    batches = iter(trainer._batches(0))
    trainer._train_step(next(batches), tf.constant(0.0))
    after = values(trainer.model.trainable_variables)
    for s, a, e in zip(start, after, values(trainer.ema_model.trainable_variables)):
        np.testing.assert_allclose(e, 0.999 * s + 0.001 * a, rtol=1e-5, atol=1e-7)
    assert 'ema_warmupFalse' in trainer.run_dir and 'bn_statsmoving' in trainer.run_dir


def test_metrics_are_sklearns_over_labels_and_predictions():
    labels = np.array([0, 0, 1, 1, 1, 2])
    pred = np.array([0, 3, 1, 1, 0, 2])            # class 3 is predicted but absent from the labels
    probs = np.eye(4)[pred]
    got = metrics.classification_metrics(probs, labels, ['a', 'b', 'c', 'd'])
    for average in ('macro', 'weighted'):
        assert got[f'f1_score/{average}'] == pytest.approx(
            sklearn_metrics.f1_score(labels, pred, average=average, zero_division=0))
        assert got[f'precision/{average}'] == pytest.approx(
            sklearn_metrics.precision_score(labels, pred, average=average, zero_division=0))
        assert got[f'recall/{average}'] == pytest.approx(
            sklearn_metrics.recall_score(labels, pred, average=average, zero_division=0))
    # Macro over the 4 classes of labels and predictions: the predicted-only class counts as 0.
    assert got['f1_score/macro'] == pytest.approx((0.5 + 0.8 + 1 + 0) / 4)
    assert got['accuracy_test/a'] == 50 and got['accuracy_test/b'] == pytest.approx(200 / 3)
    assert got['accuracy_test/c'] == 100 and 'accuracy_test/d' not in got


def test_labeled_set_smaller_than_the_batch(ml_data, tmp_path):
    # 4 labeled images, batch 16: the labeled stream repeats across epochs within a batch.
    trainer = tiny_trainer(ml_data, tmp_path, n_label=4, batch=16, valid=4)
    batch = next(iter(trainer._batches(0)))
    assert batch['x'].shape[0] == 16
    results = trainer.train()
    assert np.isfinite(results['accuracy_test'])


def test_empty_labeled_set_is_an_error(ml_data, tmp_path):
    make_ssl_dataset(str(ml_data))
    images = np.zeros([0, 8, 8, 1], np.uint8)
    write_records(str(ml_data / 'SSL' / 'toy.1@12-label.tfrecord'), images, np.zeros([0], np.int64), 3)
    result = run_script('realmix.py', '--dataset=toy.1@12-6', f'--train_dir={tmp_path}',
                        '--filters=4', '--repeat=1', '--train_kimg=1', '--batch=8')
    assert_user_error(result, 'toy.1@12-label.tfrecord', 'no')


def test_console_prints_dash_without_validation_set(ml_data, tmp_path):
    make_ssl_dataset(str(ml_data))
    result = assert_ok(run_script('realmix.py', '--dataset=toy.1@12-0', f'--train_dir={tmp_path}',
                                  '--filters=4', '--repeat=1', '--train_kimg=1', '--batch=8',
                                  '--augment=svhn'))
    line = [t for t in result.stdout.splitlines() if 'accuracy train/valid/test' in t][-1]
    assert line.split()[-2] == '-' and 'nan' not in result.stdout


def test_supervised_baseline_on_digits_fits_its_labels_and_beats_an_svm(ml_data, tmp_path):
    """Issue 9's yardstick: 50 digits labels, 1,024 steps; evaluated weights >= 95% on their own
    labeled images, and a test accuracy at least that of an SVM on the same 50 labels."""
    from sklearn.svm import SVC

    from libml import datasets, pipeline
    assert_ok(run_script('scripts/create_datasets.py', 'digits'))
    assert_ok(run_script('scripts/create_split.py', '--seed=1', '--label_split_size=50',
                         ml_data / 'SSL' / 'digits', ml_data / 'digits-train.tfrecord'))
    # The settings of benchmarks/compare.py on digits (WRN-28-2 with 2 stages, batch 32).
    result = assert_ok(run_script(
        'fully_supervised/fs_baseline.py', '--dataset=digits-0',
        '--train_record=SSL/digits.1@50-label.tfrecord', '--test_record=digits-test.tfrecord',
        '--augment=svhn', '--batch=32', '--scales=2',
        '--train_kimg=32', '--report_kimg=32', '--save_kimg=32', '--seed=1',
        f'--train_dir={tmp_path}'))
    line = [t for t in result.stdout.splitlines() if 'accuracy train/valid/test' in t][-1]
    fit, test = float(line.split()[-3]), float(line.split()[-1])
    ds = datasets.resolve('digits-0', ('SSL/digits.1@50-label.tfrecord', 'digits-test.tfrecord'))
    (xl, yl), (xt, yt) = (pipeline.load_arrays(p, ds.shape) for p in (ds.labeled, ds.test))
    flat = lambda a: a.reshape(len(a), -1) / 255
    svm = 100 * SVC(kernel='rbf', C=10, gamma='scale').fit(flat(xl), yl).score(flat(xt), yt)
    assert fit >= 95 and test >= svm, (fit, test, svm)

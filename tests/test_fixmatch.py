"""FixMatch: its loss, the weak and strong views of the input pipeline, a run through the trainer."""
import glob
import os

import numpy as np
import pytest

from conftest import make_images, make_ssl_dataset, write_records

import libml  # noqa: F401
import tensorflow as tf

from libml import datasets, events, files, pipeline, randaugment, records, train
from libml.algorithm import Step
from libml.utils import UserError

import fixmatch  # at the repository root, on sys.path via conftest


class FixedLogits:
    """A stand-in model: returns the given logits (a variable, so gradients can be taken) and
    records how it was called."""

    def __init__(self, logits):
        self.logits = tf.Variable(logits, dtype=tf.float32)
        self.calls = []

    def __call__(self, x, training=False, update_stats=True):
        self.calls.append((x.shape[0], training, update_stats))
        return tf.identity(self.logits)


def test_loss_pseudo_labels_mask_and_one_forward():
    b, n = 2, 4   # 2 labeled, uratio 2: 4 unlabeled images in 2 views
    weak = np.array([[5., 0, 0], [0, 0, 0], [0, 0, 9], [0, 4, 0]])   # confident: rows 0, 2, 3
    strong = np.array([[1., 2, 0], [0, 3, 0], [1, 0, 1], [0, 0, 2]])
    labeled = np.array([[2., 0, 0], [0, 0, 1]])
    model = FixedLogits(np.concatenate([labeled, weak, strong]))
    batch = {'x': np.zeros([b, 8, 8, 1], np.uint8), 'label': np.array([0, 2]),
             'u': np.zeros([2, n, 8, 8, 1], np.uint8), 'u_label': np.array([0, 1, 1, 1])}
    algo = fixmatch.FixMatch(3, confidence=0.95, wu=2.0, uratio=2)
    with tf.GradientTape() as tape:
        loss, stats = algo.loss(batch, Step(model, None, tf.constant(0.), tf.constant(0.)))
    # One forward pass over labeled + weak + strong, in training mode, moving the statistics.
    assert model.calls == [(b + 2 * n, True, True)]

    def xe(logits, labels):
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        return -np.log(p[np.arange(len(labels)), labels])

    probs = np.exp(weak) / np.exp(weak).sum(1, keepdims=True)
    mask = probs.max(1) >= 0.95
    assert mask.tolist() == [True, False, True, True]
    expect_xe = xe(labeled, [0, 2]).mean()
    expect_xeu = (xe(strong, probs.argmax(1)) * mask).sum() / n   # mean over all unlabeled
    np.testing.assert_allclose(float(stats['losses/xe']), expect_xe, rtol=1e-5)
    np.testing.assert_allclose(float(stats['losses/xeu']), expect_xeu, rtol=1e-5)
    np.testing.assert_allclose(float(loss), expect_xe + 2.0 * expect_xeu, rtol=1e-5)
    assert float(stats['monitors/mask']) == 0.75
    assert float(stats['monitors/label_acc']) == 0.5   # argmax 0, 0, 2, 1 vs labels 0, 1, 1, 1
    # The pseudo-labels are targets: no gradient reaches the weak view's logits.
    grad = tape.gradient(loss, model.logits).numpy()
    assert np.all(grad[b:b + n] == 0) and np.any(grad[b + n:] != 0) and np.any(grad[:b] != 0)
    # Without the unlabeled images' labels, no label accuracy.
    del batch['u_label']
    assert 'monitors/label_acc' not in algo.loss(batch, Step(model, None, tf.constant(0.),
                                                             tf.constant(0.)))[1]


def test_bad_hyper_parameters_are_user_errors():
    for change, flag in ((dict(confidence=1.5), '--confidence'), (dict(wu=-1.), '--wu'),
                         (dict(uratio=0), '--uratio')):
        with pytest.raises(UserError, match=flag):
            fixmatch.FixMatch(3, **change)


def test_pipeline_weak_and_strong_views(ml_data):
    dataset = datasets.resolve(make_ssl_dataset(str(ml_data)) + '-6')
    assert dataset.unlabeled.labels_known
    fix = pipeline.train_batches(dataset, 4, 2, 'svhn', 5, 0, uratio=3, views=('weak', 'strong'))
    plain = pipeline.train_batches(dataset, 4, 2, 'svhn', 5, 0, uratio=3)
    steps = iter(fix)
    first = [next(steps) for _ in range(3)]
    batch = first[0]
    assert batch['x'].shape == (4, 8, 8, 1) and batch['u'].shape == (2, 12, 8, 8, 1)
    assert batch['u_label'].shape == (12,) and set(batch['u_label'].numpy()) <= {0, 1, 2}
    # The weak view is the preset's view (the same as an all-weak pipeline's); the strong one
    # is another image.
    same = next(iter(plain))
    np.testing.assert_array_equal(batch['u'][0], same['u'][0])
    np.testing.assert_array_equal(batch['x'], same['x'])
    assert not np.array_equal(batch['u'][1], same['u'][1])
    # Resuming after 2 steps (8 labeled images) continues with the third step's batches.
    resumed = next(iter(pipeline.train_batches(dataset, 4, 2, 'svhn', 5, 8, uratio=3,
                                               views=('weak', 'strong'))))
    for key in ('x', 'u', 'u_label'):
        np.testing.assert_array_equal(resumed[key], first[2][key])


def test_unknown_unlabeled_labels_are_not_delivered(ml_data):
    name = make_ssl_dataset(str(ml_data))
    x, _ = make_images(20, (8, 8, 1), 3, seed=4)
    write_records(str(ml_data / 'SSL' / f'{name}-unlabel.tfrecord'), x, np.full(20, -1), 3)
    dataset = datasets.resolve(name + '-0')
    assert not dataset.unlabeled.labels_known
    batch = next(iter(pipeline.train_batches(dataset, 4, 1, 'svhn', 0, 0, uratio=2)))
    assert 'u_label' not in batch and batch['u'].shape == (1, 8, 8, 8, 1)


def test_out_of_distribution_labels_of_a_filtered_file_are_delivered(ml_data):
    """-1 from a class map (filter_dataset.py: a known class outside the model's) is a label."""
    name = make_ssl_dataset(str(ml_data))
    path = str(ml_data / 'SSL' / f'{name}-unlabel.tfrecord')
    x, _ = make_images(20, (8, 8, 1), 3, seed=4)
    write_records(path, x, np.array([-1, 0, 1, 2] * 5), 3)
    meta = records.read_meta(path)
    assert not datasets.resolve(name + '-0').unlabeled.labels_known   # -1 of unknown meaning
    files.write_json(path + '.json', dict(meta, class_map={'0': 0, '1': 1, '2': 2, '7': -1}))
    dataset = datasets.resolve(name + '-0')
    assert dataset.unlabeled.labels_known
    batch = next(iter(pipeline.train_batches(dataset, 4, 1, 'svhn', 0, 0, uratio=5)))
    assert set(batch['u_label'].numpy()) == {-1, 0, 1, 2}


def test_fixmatch_trains_with_sgd_and_writes_its_monitors(ml_data, tmp_path):
    name = make_ssl_dataset(str(ml_data), n_unlabel=60) + '-6'
    config = train.Config(train_dir=str(tmp_path), batch=32, filters=4, repeat=1, train_kimg=1,
                          report_kimg=1, save_kimg=1, augment='svhn', eval_batch=64,
                          **fixmatch.TRAINER_DEFAULTS)
    trainer = train.Trainer(fixmatch.FixMatch(3, uratio=2), datasets.resolve(name), config)
    assert trainer.optimizer.name == 'sgd'
    results = trainer.train()
    run = os.path.basename(trainer.run_dir)
    for part in ('FixMatch_', 'confidence0.95', 'lr0.03', 'lr_schedulecosine', 'optimizersgd',
                 'uratio2', 'wd0.0005', 'wu1.0'):
        assert part in run
    files = events.event_files(trainer.run_dir)
    for tag in ('losses/xe', 'losses/xeu', 'monitors/mask', 'monitors/label_acc'):
        by_step, _, _ = events.read_scalars(files, tag)
        assert list(by_step) == [1024] and np.isfinite(by_step[1024]), tag
    assert 0 <= results['accuracy_test'] <= 100
    assert glob.glob(os.path.join(trainer.run_dir, 'tf', 'model.ckpt-00001024.index'))
    assert randaugment.RANDAUGMENT_OPS == 2   # the paper's two ops per image

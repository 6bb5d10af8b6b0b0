"""The trainer: losses fall, checkpoints, exact resume, divergence, distribution, bad input."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, assert_ok, assert_user_error, make_ssl_dataset, run_script

import libml  # noqa: F401
import tensorflow as tf

from libml import datasets, runs, train
from libml.utils import UserError

import realmix  # at the repository root, on sys.path via conftest
from libml.baselines import Supervised

TINY = dict(batch=8, filters=4, repeat=1, train_kimg=2, report_kimg=1, save_kimg=1,
            augment='svhn', eval_batch=64)


def tiny_trainer(ml_data, tmp_path, algorithm=None, **overrides):
    name = make_ssl_dataset(str(ml_data), class_names=['a', 'b', 'c']) + '-6'
    config = train.Config(train_dir=str(tmp_path / 'exp'), **dict(TINY, **overrides))
    dataset = datasets.resolve(name)
    algorithm = algorithm or realmix.RealMix(dataset.nclass, config.train_kimg)
    return train.Trainer(algorithm, dataset, config)


def test_realmix_loss_falls_on_separable_data(ml_data, tmp_path):
    trainer = tiny_trainer(ml_data, tmp_path, lr=0.01)
    trainer.restore()
    batches = iter(trainer._batches(0))
    losses = [float(trainer._train_step(next(batches), tf.constant(0.0))['losses/xe'])
              for _ in range(40)]
    # MixUp targets are soft, so cross-entropy has a floor well above 0.
    assert np.mean(losses[-8:]) < 0.85 * np.mean(losses[:8]), losses


def test_run_folder_checkpoints_and_summaries(ml_data, tmp_path):
    trainer = tiny_trainer(ml_data, tmp_path, keep_ckpt=1)
    trainer.train()
    run = trainer.run_dir
    assert os.path.basename(run).startswith('RealMix_archresnet_augmentsvhn_batch8_beta0.75')
    args = json.load(open(os.path.join(run, 'args', 'args.json')))
    assert args['nclass'] == 3 and args['channels'] == 1 and args['class_names'] == ['a', 'b', 'c']
    # keep_ckpt=1: only the newest of the two checkpoints (1 and 2 kimg) is left.
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(run, 'tf', 'model.ckpt-*.index'))) \
        == ['model.ckpt-00002048.index']
    assert tf.train.latest_checkpoint(os.path.join(run, 'tf')).endswith('model.ckpt-00002048')
    tags = {}
    for path in glob.glob(os.path.join(run, 'tf', 'events.*')):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor)   # images and histograms: not scalars
                tags.setdefault(value.tag, []).append(
                    (event.step, float(array) if array.ndim == 0 else array))
    # The first step's inputs (RealMix: two weak views), the evaluation's pictures, the monitors.
    assert [s for s, _ in tags['inputs/unlabeled_2_weak']] == [0]
    assert [s for s, _ in tags['eval/confusion_matrix']] == [1024, 2048]
    assert 0 < tags['collapse/largest_class_share'][0][1] <= 1
    assert 'collapse/mask_rate' not in tags   # RealMix masks only with --percent_mask
    for tag in ('losses/xe', 'losses/l2u', 'losses/overall', 'losses/min_unsup_prob',
                'losses/mean_unsup_prob', 'losses/max_unsup_prob', 'losses/val_loss',
                'accuracy_train_labeled', 'accuracy_valid', 'accuracy_test', 'f1_score/macro',
                'f1_score/weighted', 'precision/macro', 'recall/weighted', 'accuracy_test/a',
                'accuracy_test/c'):
        assert tag in tags, sorted(tags)
    assert [s for s, _ in tags['accuracy_test']] == [1024, 2048]
    assert all(0 <= v <= 100 for _, v in tags['accuracy_test'])
    # The cost of each report period (compare.py's learning curves against hours read them).
    for tag in ('monitors/period_seconds', 'monitors/period_cpu_seconds'):
        assert [s for s, _ in tags[tag]] == [1024, 2048]
        assert all(0 < v < 600 for _, v in tags[tag]), tags[tag]


def final_weights(trainer):
    return [v.numpy() for v in trainer.model.variables + trainer.ema_model.variables]


def test_deterministic_resume_equals_uninterrupted_run(ml_data, tmp_path):
    straight = tiny_trainer(ml_data, tmp_path / 'a', deterministic=True)
    straight.train()
    # The same run, stopped after its first checkpoint and started again by a new trainer.
    first = tiny_trainer(ml_data, tmp_path / 'b', deterministic=True, train_kimg=1)
    first.train()
    resumed = tiny_trainer(ml_data, tmp_path / 'b', deterministic=True)
    assert resumed.run_dir.replace(str(tmp_path / 'b'), '') == straight.run_dir.replace(str(tmp_path / 'a'), '')
    resumed.train()
    for a, b in zip(final_weights(straight), final_weights(resumed)):
        np.testing.assert_array_equal(a, b)
    assert int(resumed.optimizer.updates.numpy()) == int(straight.optimizer.updates.numpy()) == 256


class Diverging(Supervised):
    """A loss that becomes NaN after the first 1024 images."""

    def loss(self, batch, step):
        loss, stats = super().loss(batch, step)
        loss = tf.where(step.nimg >= 1024, np.nan, loss)
        return loss, {'losses/xe': loss}


def test_non_finite_loss_stops_and_keeps_last_checkpoint(ml_data, tmp_path):
    trainer = tiny_trainer(ml_data, tmp_path, algorithm=Diverging(3), train_kimg=3)
    with pytest.raises(train.NonFiniteLoss, match='non-finite at 1024 images'):
        trainer.train()
    assert tf.train.latest_checkpoint(os.path.join(trainer.run_dir, 'tf')).endswith('model.ckpt-00001024')


def test_killed_run_resumes_from_its_last_checkpoint(ml_data, tmp_path):
    name = make_ssl_dataset(str(ml_data)) + '-6'
    cmd = [sys.executable, 'realmix.py', f'--dataset={name}', '--batch=8', '--filters=4',
           '--repeat=1', '--report_kimg=1', '--save_kimg=1', '--augment=svhn',
           f'--train_dir={tmp_path}', '--train_kimg=1000']
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 900   # generous: a loaded CI machine is slow to start TensorFlow
    while not glob.glob(f'{tmp_path}/*/*/tf/model.ckpt-00002048.index') and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[0].decode()
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The newest complete checkpoint, as the trainer resumes: the kill may land after the
    # checkpoint's files and before TensorFlow's state file names it (runs.newest_checkpoint).
    saved = runs.newest_checkpoint(glob.glob(f'{tmp_path}/*/*/tf')[0], say=lambda _: None)
    assert saved, 'no checkpoint within the deadline'
    done = int(saved.rsplit('-', 1)[1])
    assert done >= 2048
    result = assert_ok(run_script(*cmd[1:-1], f'--train_kimg={done // 1024 + 1}'))
    assert f'Resuming from {saved}' in result.stdout
    # Saving a checkpoint prints no TensorFlow deprecation warning (newcomers read them as errors).
    assert 'deprecated' not in result.stdout + result.stderr
    newest = tf.train.latest_checkpoint(glob.glob(f'{tmp_path}/*/*/tf')[0])
    assert int(newest.rsplit('-', 1)[1]) == (done // 1024 + 1) * 1024


def test_bad_input_is_one_line_error(ml_data, tmp_path):
    name = make_ssl_dataset(str(ml_data)) + '-6'
    common = [f'--train_dir={tmp_path}', '--filters=4', '--repeat=1', '--train_kimg=1', '--batch=8']
    # Through the entry point: one line on stderr (utils.run), for each kind of check.
    cases = [
        (['--dataset=nosuch.1@10-5'], ['nosuch.1@10-label.tfrecord', 'create_split.py']),
        (['--dataset=toy-5'], ['NAME.SEED@SIZE-VALID']),
        ([f'--dataset={name}', '--tsa=sometimes'], ['--tsa']),          # RealMix's checks
        ([f'--dataset={name}', '--augment=blur'], ['--augment']),       # the trainer's checks
        ([f'--dataset={name}', '--nclass=10'], ['--nclass=10', '3 classes']),
        ([f'--dataset={name}', '--img_size=32'], ['--img_size=32', '8x8']),
    ]
    for args, words in cases:
        assert_user_error(run_script('realmix.py', *common, *args), *words)
    # RealMix's other hyper-parameter checks raise the same UserError (each a TF start less).
    for changes, flag in ((dict(mixmode='xy.z'), '--mixmode'), (dict(percent_mask=1.5), '--percent_mask'),
                          (dict(beta=0.), '--beta'), (dict(nu=0), '--nu'), (dict(T=0.), '--T'),
                          (dict(w_match=-1.), '--w_match')):
        with pytest.raises(UserError, match=flag):
            realmix.RealMix(3, 1, **changes)
    for changes, flag in ((dict(batch=0), '--batch'), (dict(lr=0.), '--lr'),
                          (dict(augment='blur'), '--augment')):
        with pytest.raises(UserError, match=flag):
            train.Config(**changes).check()


def test_class_mapping_flag(ml_data, tmp_path):
    make_ssl_dataset(str(ml_data))
    (ml_data / 'names.json').write_text(json.dumps({'0': 'x', '1': 'y', '2': 'z'}))
    assert datasets.resolve('toy.1@12-6', class_mapping='names.json').class_names == ['x', 'y', 'z']
    (ml_data / 'wrong.json').write_text(json.dumps({'0': 'x', '1': 'y'}))
    with pytest.raises(UserError, match='3 classes but its class mapping names 2'):
        datasets.resolve('toy.1@12-6', class_mapping=str(ml_data / 'wrong.json'))


def test_train_dir_not_writable(ml_data, tmp_path):
    if os.geteuid() == 0:
        target = '/proc/no_such_dir'  # root ignores permission bits; /proc refuses new folders
    else:
        target = str(tmp_path / 'ro')
        os.makedirs(target)
        os.chmod(target, 0o500)
    trainer = tiny_trainer(ml_data, tmp_path)
    trainer.config.train_dir = target
    trainer.run_dir = os.path.join(target, 'run')
    with pytest.raises(UserError, match='--train_dir'):
        trainer.train()


MIRRORED = r'''
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
import libml
import tensorflow as tf
cpu = tf.config.list_physical_devices('CPU')[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from conftest import make_ssl_dataset
from libml import datasets, runs, train
from libml.baselines import Supervised
import realmix
name = make_ssl_dataset({ml_data!r}) + '-6'
out = {{}}
for algo in ('supervised', 'realmix'):
    for strategy in ('default', 'mirrored'):
        config = train.Config(train_dir={tmp!r} + '/' + strategy, batch=8, filters=4, repeat=1,
                              augment='none', strategy=strategy, deterministic=True)
        dataset = datasets.resolve(name)
        a = Supervised(3) if algo == 'supervised' else realmix.RealMix(3, 2, mixmode='.')
        t = train.Trainer(a, dataset, config)
        t.restore()
        it = iter(t._batches(0))
        out[algo, strategy] = [float(t._train_step(next(it), tf.constant(float(i * 8)))['losses/overall'])
                               for i in range(3)]
        # The EMA model's statistics are recomputed outside the replicas (cross-replica context).
        t._bn_images = t.dataset.eval_sets()['train_labeled'][0]
        t.refresh_ema_stats()
        out[algo, strategy, 'bn'] = t.ema_model.bn_out.moving_variance.numpy().tolist()
print(repr(out))
'''


def test_mirrored_strategy_matches_one_device(ml_data, tmp_path):
    code = MIRRORED.format(repo=REPO, tests=os.path.join(REPO, 'tests'),
                           ml_data=str(ml_data),
                           tmp=str(tmp_path))
    result = assert_ok(run_script('-c', code))
    out = eval(result.stdout.strip().splitlines()[-1])
    # Synchronized batch norm: the supervised losses match the one-device run step for step.
    np.testing.assert_allclose(out['supervised', 'mirrored'], out['supervised', 'default'], rtol=1e-4)
    np.testing.assert_allclose(out['supervised', 'mirrored', 'bn'], out['supervised', 'default', 'bn'],
                               rtol=1e-3)
    # RealMix interleaves within each replica's slice, so batch-norm batches differ a little.
    assert np.all(np.isfinite(out['realmix', 'mirrored']))
    np.testing.assert_allclose(out['realmix', 'mirrored'][0], out['realmix', 'default'][0], rtol=0.2)

"""Faster and wider training: mixed precision (--precision) and multi-worker training
(--strategy=multiworker, two real worker processes on this machine)."""
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, make_ssl_dataset

import libml  # noqa: F401
import tensorflow as tf

from libml import predict, runs

from test_train import tiny_trainer  # RealMix, batch 8, filters 4, one block, 8x8x1 images


def steps(trainer, n):
    batches = iter(trainer._batches(0))
    return [trainer._train_step(next(batches), tf.constant(float(i * trainer.config.batch)))
            for i in range(n)]


def all_finite(variables):
    return all(np.isfinite(v.numpy()).all() for v in variables)


@pytest.mark.parametrize('precision', ['bfloat16', 'float16'])
def test_16_bit_training_steps_loss_falls(ml_data, tmp_path, precision):
    trainer = tiny_trainer(ml_data, tmp_path, lr=0.01, precision=precision)
    trainer.restore()
    assert trainer.model.compute_dtype == precision
    assert trainer.ema_model.compute_dtype == tf.float32  # evaluated and saved in float32
    assert all(v.dtype == tf.float32 for v in trainer.model.variables + trainer.ema_model.variables)
    assert f'precision{precision}' in os.path.basename(trainer.run_dir)
    out = steps(trainer, 40)
    losses = [float(s['losses/xe']) for s in out]
    assert np.mean(losses[-8:]) < 0.85 * np.mean(losses[:8]), losses
    assert all_finite(trainer.model.variables + trainer.ema_model.variables)
    if precision == 'float16':  # the default scale (2^15) suits this model: no step skipped
        assert [float(s['monitors/skipped_steps']) for s in out] == [0.0] * 40
        assert int(trainer.optimizer.updates.numpy()) == 40
    else:
        assert trainer.loss_scale is None and 'monitors/loss_scale' not in out[0]


def test_float32_runs_keep_their_names(ml_data, tmp_path):
    trainer = tiny_trainer(ml_data, tmp_path)
    assert 'precision' not in os.path.basename(trainer.run_dir)
    assert trainer.model.compute_dtype == tf.float32 and trainer.loss_scale is None


def test_float16_recovers_from_a_huge_loss_scale_and_resumes_it(ml_data, tmp_path):
    trainer = tiny_trainer(ml_data, tmp_path, precision='float16', train_kimg=1, batch=32)
    huge = 2.0 ** 32  # the float16 gradients overflow: steps are skipped until it is small enough
    trainer.loss_scale.scale.assign(huge)
    trainer.train()
    scale = float(trainer.loss_scale.scale.numpy())
    updates = int(trainer.optimizer.updates.numpy())
    assert scale <= huge / 2 ** 8, scale
    assert 0 < updates < 32, updates  # 32 steps, of which the first ones were skipped
    assert all_finite(trainer.model.variables + trainer.ema_model.variables)
    # The scale is part of the checkpoint: a resumed run continues with it.
    resumed = tiny_trainer(ml_data, tmp_path, precision='float16', train_kimg=2, batch=32)
    assert resumed.restore() == 1024
    assert float(resumed.loss_scale.scale.numpy()) == scale
    assert int(resumed.optimizer.updates.numpy()) == updates


def test_bfloat16_resume_is_exact_and_evaluated_model_is_float32(ml_data, tmp_path):
    settings = dict(precision='bfloat16', deterministic=True, batch=64)
    straight = tiny_trainer(ml_data, tmp_path / 'a', **settings)
    straight.train()
    first = tiny_trainer(ml_data, tmp_path / 'b', train_kimg=1, **settings)
    first.train()
    resumed = tiny_trainer(ml_data, tmp_path / 'b', **settings)
    resumed.train()
    for a, b in zip(straight.model.variables + straight.ema_model.variables,
                    resumed.model.variables + resumed.ema_model.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    args = json.load(open(os.path.join(resumed.run_dir, 'args', 'args.json')))
    assert args['precision'] == 'bfloat16'
    # Inference rebuilds the evaluated model in float32 and predicts what the trainer evaluated.
    model, _, _ = runs.restore_ema_model(resumed.run_dir)
    assert model.compute_dtype == tf.float32
    images = resumed.dataset.eval_sets()['test'][0]
    np.testing.assert_allclose(predict.predict(model, images),
                               predict.predict(resumed.ema_model, images), atol=1e-6)


def test_every_worker_reads_other_examples(ml_data, tmp_path):
    """Per-worker input sharding: with 2 workers of one replica each, worker i gets slice i of
    the global batch of a one-device run, so the workers' batches differ."""
    trainer = tiny_trainer(ml_data, tmp_path, augment='none')
    whole = next(iter(trainer._batches(0)))
    parts = [next(iter(trainer._worker_batches(0, tf.distribute.InputContext(2, i, 2))))
             for i in range(2)]
    assert not np.array_equal(parts[0]['x'], parts[1]['x'])
    assert not np.array_equal(parts[0]['u'], parts[1]['u'])
    assert parts[0]['x'].shape[0] == 4
    for key in ('x', 'label', 'u'):
        got = np.concatenate([p[key] for p in parts], axis=1 if key == 'u' else 0)
        np.testing.assert_array_equal(got, whole[key])  # augment=none: exactly the same pixels


# ----------------------------------------------------------------------------------------------
# Multi-worker: two worker processes on 127.0.0.1, one CPU device each.

TIMEOUT = 900  # seconds; a few dozen on a quiet machine, but shared CI machines can be slow
FLAGS = ['--batch=64', '--filters=4', '--repeat=1', '--augment=none', '--deterministic',
         '--report_kimg=1', '--save_kimg=1']

REFERENCE = r'''
import sys
sys.path[:0] = [{repo!r}]
import libml
import tensorflow as tf
cpu = tf.config.list_physical_devices('CPU')[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from libml import datasets, train
import realmix
dataset = datasets.resolve({dataset!r})
common = dict(batch=64, filters=4, repeat=1, augment='none', deterministic=True, report_kimg=1,
              save_kimg=1)
# The mirrored run of the multi-worker command: one process, two replicas.
config = train.Config(train_dir={train_dir!r}, train_kimg=1, strategy='mirrored', **common)
train.Trainer(realmix.RealMix(3, 1000), dataset, config).train()
# bfloat16 under the mirrored strategy, and with XLA: its first loss is float32's (one float32
# reference: the strategy does not change the loss of a batch).
first = {{}}
for strategy, precision, jit in (('mirrored', 'float32', False), ('mirrored', 'bfloat16', False),
                                 ('default', 'bfloat16', True)):
    config = train.Config(train_dir={train_dir!r} + '/' + precision, precision=precision,
                          strategy=strategy, jit_compile=jit, **common)
    t = train.Trainer(realmix.RealMix(3, 1000), dataset, config)
    t.restore()
    first[strategy, precision] = float(
        t._train_step(next(iter(t._batches(0))), tf.constant(0.0))['losses/overall'])
print(repr(first))
'''


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(dataset, train_dirs, train_kimg, log_dir):
    """Starts the two workers of one job (worker 0 is the chief); returns their Popen objects."""
    hosts = [f'127.0.0.1:{p}' for p in free_ports(2)]
    procs = []
    for i, train_dir in enumerate(train_dirs):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {'cluster': {'worker': hosts}, 'task': {'type': 'worker', 'index': i}}))
        log = open(os.path.join(log_dir, f'worker{i}-{len(os.listdir(log_dir))}.log'), 'w+')
        procs.append(subprocess.Popen(
            [sys.executable, 'realmix.py', f'--dataset={dataset}', '--strategy=multiworker',
             f'--train_dir={train_dir}', f'--train_kimg={train_kimg}', *FLAGS],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
        procs[-1].log = log
    return procs


def output(proc):
    proc.log.seek(0)
    return proc.log.read()


def scalars(run_dir):
    out = {}
    for path in glob.glob(os.path.join(run_dir, 'tf', 'events.*')):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor)
                if array.ndim == 0:   # not the images and histograms
                    out[value.tag, event.step] = float(array)
    return out


@pytest.fixture
def processes():
    """A list to put the test's subprocesses in: those still running at its end are killed."""
    started = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_two_workers_train_like_mirrored_and_resume_after_sigkill(ml_data, tmp_path, processes):
    dataset = make_ssl_dataset(str(ml_data)) + '-6'
    shared, other, logs = tmp_path / 'shared', tmp_path / 'other', tmp_path / 'logs'
    logs.mkdir()
    # The reference (the same run on one process with two replicas) trains meanwhile.
    reference = subprocess.Popen(
        [sys.executable, '-c', REFERENCE.format(repo=REPO, dataset=dataset,
                                                train_dir=str(tmp_path / 'mirrored'))],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    processes.append(reference)
    # 1. A long job; worker 1 is given a folder of its own, to show that it writes nothing.
    procs = start_workers(dataset, [shared, other], 1000, logs)
    processes.extend(procs)
    deadline = time.time() + TIMEOUT
    while not glob.glob(f'{shared}/*/*/tf/model.ckpt-*.index'):
        assert time.time() < deadline and all(p.poll() is None for p in procs), \
            '\n'.join(output(p)[-3000:] for p in procs)
        time.sleep(0.2)
    for p in procs:  # the whole job dies at once
        p.send_signal(signal.SIGKILL)
        p.wait()
    killed = procs
    assert not other.exists()
    [run_dir] = glob.glob(f'{shared}/*/*')
    done = runs.newest_checkpoint(os.path.join(run_dir, 'tf'))
    ref_out, ref_err = reference.communicate(timeout=TIMEOUT)
    assert reference.returncode == 0, ref_err[-3000:]
    # The first steps' losses (the mean of the first 16 steps) equal the mirrored run's.
    mirrored, multi = scalars(glob.glob(f'{tmp_path}/mirrored/*/*')[0]), scalars(run_dir)
    for tag in ('losses/xe', 'losses/l2u', 'losses/overall', 'losses/mean_unsup_prob',
                'collapse/largest_class_share', 'collapse/guess_entropy'):
        np.testing.assert_allclose(multi[tag, 1024], mirrored[tag, 1024], rtol=1e-5, atol=1e-7)
    first = eval(ref_out.strip().splitlines()[-1])
    for strategy in ('mirrored', 'default'):  # default: with --jit_compile
        assert abs(first[strategy, 'bfloat16'] / first['mirrored', 'float32'] - 1) < 0.02, first

    # 2. The same job again, both workers on the shared folder: it resumes and both finish.
    kimg = int(done.rsplit('-', 1)[1]) // 1024 + 1
    procs = start_workers(dataset, [shared, shared], kimg, logs)
    processes.extend(procs)
    for p in procs:
        p.wait(timeout=TIMEOUT)
        assert p.returncode == 0, output(p)[-3000:]
        assert f'Resuming from {done}' in output(p)
    newest = runs.newest_checkpoint(os.path.join(run_dir, 'tf'))
    assert newest.endswith(f'model.ckpt-{kimg * 1024:08d}')
    # Only the chief wrote: every event file carries its process id, as does the lock.
    writers = {int(re.search(r'\.(\d+)\.\d+\.v2$', f).group(1))
               for f in glob.glob(f'{run_dir}/tf/events.*')}
    assert writers == {killed[0].pid, procs[0].pid}, writers
    assert f'pid {procs[0].pid} ' in open(os.path.join(run_dir, '.lock')).read()
    assert not other.exists()


@pytest.mark.parametrize('value', ['{"cluster": ', '{"cluster": {"worker": ["a:1"]}}',
                                   '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", '
                                   '"index": 1}}'])
def test_unusable_tf_config_is_a_one_line_error(monkeypatch, value):
    from libml import distribute
    from libml.utils import UserError
    monkeypatch.setenv('TF_CONFIG', value)
    with pytest.raises(UserError, match='TF_CONFIG is not usable'):
        distribute.check_tf_config()
    monkeypatch.setenv('TF_CONFIG', '{"cluster": {"worker": ["a:1", "b:2"]}, '
                                    '"task": {"type": "worker", "index": 1}}')
    distribute.check_tf_config()

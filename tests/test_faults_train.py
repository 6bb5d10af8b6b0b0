"""Faults met while training (issue 10): progress is never discarded, training never hangs, and a
user's mistake is one line on stderr."""
import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np

from conftest import REPO, assert_ok, assert_user_error, make_ssl_dataset, run_script

import libml  # noqa: F401
import tensorflow as tf

from libml import runs

TINY = ['--filters=4', '--repeat=1', '--batch=8', '--augment=svhn', '--report_kimg=1',
        '--save_kimg=1']


def realmix(tmp_path, *args, **kwargs):
    return run_script('realmix.py', f'--train_dir={tmp_path / "exp"}', *TINY, *args, **kwargs)


def run_folder(tmp_path):
    found = glob.glob(str(tmp_path / 'exp' / '*' / 'RealMix_*'))
    assert len(found) == 1, found
    return found[0]


def checkpoints(run):
    return sorted(os.path.basename(p)[:-len('.index')]
                  for p in glob.glob(os.path.join(run, 'tf', 'model.ckpt-*.index')))


def trained_run(ml_data, tmp_path, kimg=2):
    name = make_ssl_dataset(str(ml_data)) + '-6'
    assert_ok(realmix(tmp_path, f'--dataset={name}', f'--train_kimg={kimg}', '--keep_ckpt=5'))
    return name, run_folder(tmp_path)


def test_garbled_or_stale_state_file_resumes_from_the_newest_checkpoint(ml_data, tmp_path):
    name, run = trained_run(ml_data, tmp_path)
    assert checkpoints(run) == ['model.ckpt-00001024', 'model.ckpt-00002048']
    state = os.path.join(run, 'tf', 'checkpoint')
    for content in ('\x00\x01garbage{{', 'model_checkpoint_path: "model.ckpt-00009999"\n',
                    'model_checkpoint_path: "model.ckpt-00001024"\n'):
        with open(state, 'w') as f:
            f.write(content)
        before = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(run, 'tf', 'model.*'))}
        result = assert_ok(realmix(tmp_path, f'--dataset={name}', '--train_kimg=2'))
        assert 'model.ckpt-00002048' in result.stdout and 'note:' in result.stdout
        assert 'already trained for 2 kimg' in result.stdout
        # Nothing was written over.
        assert before == {p: os.path.getmtime(p) for p in glob.glob(os.path.join(run, 'tf', 'model.*'))}
    # Removed state file: training continues from the newest checkpoint, not from image 0.
    os.remove(state)
    result = assert_ok(realmix(tmp_path, f'--dataset={name}', '--train_kimg=3', '--keep_ckpt=5'))
    assert 'Resuming from' in result.stdout and 'model.ckpt-00002048' in result.stdout
    assert checkpoints(run) == ['model.ckpt-00001024', 'model.ckpt-00002048', 'model.ckpt-00003072']


def test_damaged_checkpoint_is_named_and_not_overwritten(ml_data, tmp_path):
    name, run = trained_run(ml_data, tmp_path)
    data = glob.glob(os.path.join(run, 'tf', 'model.ckpt-00002048.data-*'))[0]
    with open(data, 'r+b') as f:
        f.truncate(os.path.getsize(data) // 2)
    result = realmix(tmp_path, f'--dataset={name}', '--train_kimg=3')
    assert_user_error(result, 'model.ckpt-00002048', 'damaged', 'previous checkpoint')
    assert os.path.getsize(data) > 0 and checkpoints(run)[-1] == 'model.ckpt-00002048'


def test_checkpoints_never_replace_one_the_run_did_not_read(tmp_path):
    folder = str(tmp_path)
    v = tf.Variable(1.0)
    ckpt = runs.Checkpoints(folder, tf.train.Checkpoint(v=v), keep=3)
    ckpt.save(1024)
    with open(os.path.join(folder, 'checkpoint'), 'w') as f:
        f.write('garbled')
    try:
        ckpt.save(1024)
        raise AssertionError('expected a UserError')
    except libml.utils.UserError as e:
        assert 'model.ckpt-00001024' in str(e) and 'not overwritten' in str(e)


def test_aug_dataset_whose_validation_covers_every_original(ml_data, tmp_path):
    """The issue's reproduction: make_aug_copy, then a -VALID as large as the original set."""
    make_ssl_dataset(str(ml_data), n_unlabel=20)
    assert_ok(run_script('scripts/make_aug_copy.py', '--aug_dataset=toy.1@12', '--aug_copy=1',
                         '--augment=svhn'))
    start = time.time()
    result = realmix(tmp_path, '--dataset=toy_aug1.1@12-20', '--train_kimg=1', timeout=120)
    assert_user_error(result, 'no unlabeled training images', 'validation', 'toy_aug1.1@12-unlabel')
    assert time.time() - start < 120
    assert not os.path.exists(tmp_path / 'exp' / 'toy_aug1.1@12-20')  # no empty run folder


def test_second_trainer_in_the_same_run_folder_is_refused(ml_data, tmp_path):
    name = make_ssl_dataset(str(ml_data)) + '-6'
    cmd = [sys.executable, 'realmix.py', f'--dataset={name}', f'--train_dir={tmp_path / "exp"}',
           *TINY, '--train_kimg=1000']
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not glob.glob(str(tmp_path / 'exp' / '*' / '*' / 'tf' / 'model.ckpt-*.index')):
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.2)
        second = realmix(tmp_path, f'--dataset={name}', '--train_kimg=1000')
        assert_user_error(second, 'in use by another training', f'pid {first.pid}')
    finally:
        first.kill()
        first.wait()
    # The lock died with its process: a new run resumes.
    result = assert_ok(realmix(tmp_path, f'--dataset={name}', '--train_kimg=1'))
    assert 'already trained' in result.stdout


def test_damaged_unlabeled_file_is_named_before_training(ml_data, tmp_path):
    name = make_ssl_dataset(str(ml_data), n_unlabel=30) + '-6'
    path = ml_data / 'SSL' / 'toy.1@12-unlabel.tfrecord'
    raw = bytearray(path.read_bytes())
    raw[len(raw) * 3 // 4] ^= 0xFF  # a flipped byte: a record whose checksum fails
    path.write_bytes(bytes(raw))
    assert_user_error(realmix(tmp_path, f'--dataset={name}', '--train_kimg=1'),
                      'toy.1@12-unlabel.tfrecord', 'damaged')
    path.write_bytes(bytes(raw[:len(raw) // 2]))  # cut short
    assert_user_error(realmix(tmp_path, f'--dataset={name}', '--train_kimg=1'),
                      'toy.1@12-unlabel.tfrecord')
    assert not os.path.exists(tmp_path / 'exp' / name)


def test_unusable_train_dir_is_one_line_and_leaves_nothing(ml_data, tmp_path):
    name = make_ssl_dataset(str(ml_data)) + '-6'
    a_file = tmp_path / 'a_file'
    a_file.write_text('x')
    for train_dir in (a_file, a_file / 'below', '/proc/no_such_dir'):
        result = run_script('realmix.py', f'--dataset={name}', f'--train_dir={train_dir}', *TINY,
                            '--train_kimg=1')
        assert_user_error(result, '--train_dir')
    assert a_file.read_text() == 'x'


def test_non_finite_float_flags_are_refused(ml_data, tmp_path):
    name = make_ssl_dataset(str(ml_data)) + '-6'
    # An algorithm flag and a trainer flag (utils.run checks every float flag alike).
    for flag in ('--beta=nan', '--lr=inf'):
        result = realmix(tmp_path, f'--dataset={name}', flag, '--train_kimg=1')
        assert_user_error(result, flag.split('=')[0], 'finite')
        assert result.returncode == 2
    assert not os.path.exists(tmp_path / 'exp')


def test_bad_flag_is_one_line_exit_2_naming_it(ml_data, tmp_path):
    for args, word in ((['--batch=many'], '--batch'), (['--no_such_flag=1'], 'no_such_flag'),
                       (['--strategy=several'], '--strategy')):
        result = realmix(tmp_path, *args)
        assert_user_error(result, word)
        assert result.returncode == 2
        last = [line for line in result.stderr.splitlines() if line.strip()][-1]
        assert word.lstrip('-') in last and 'helpshort' not in last


def test_failed_start_leaves_no_run_folder(ml_data, tmp_path):
    name = make_ssl_dataset(str(ml_data)) + '-6'
    # Labels outside the class count in the test file: refused before the run folder is made.
    from conftest import write_records
    x = np.zeros([4, 8, 8, 1], np.uint8)
    write_records(str(ml_data / 'toy-test.tfrecord'), x, np.array([0, 1, 2, 7]), 3)
    assert_user_error(realmix(tmp_path, f'--dataset={name}', '--train_kimg=1'), 'toy-test.tfrecord')
    assert not glob.glob(str(tmp_path / 'exp' / '*' / '*'))


def test_ctrl_c_and_sigterm_stop_training_cleanly(ml_data, tmp_path):
    """One line, exit 130 (Ctrl-C) or 143 (SIGTERM), checkpoints kept, and the run resumes."""
    name = make_ssl_dataset(str(ml_data)) + '-6'
    for sig, status in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        cmd = [sys.executable, 'realmix.py', f'--dataset={name}', f'--train_dir={tmp_path / "exp"}',
               *TINY, '--train_kimg=1000']
        pattern = str(tmp_path / 'exp' / '*' / '*' / 'tf' / 'model.ckpt-*.index')
        before = set(glob.glob(pattern))
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.time() + 120
        while not set(glob.glob(pattern)) - before:  # a new checkpoint: training is under way
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.2)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == status, err
        last = [line for line in err.splitlines() if line.strip()][-1]
        assert ('terminated' if sig == signal.SIGTERM else 'interrupted') in last
        assert 'Traceback' not in err
    run = run_folder(tmp_path)
    assert checkpoints(run)
    result = assert_ok(realmix(tmp_path, f'--dataset={name}', '--train_kimg=1'))
    assert 'already trained' in result.stdout

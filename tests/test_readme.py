"""README.md, run: every ```bash block of the README runs, in README order, on tiny data, so a README
command that breaks fails CI.

- Skipped, and checked to be what they were when this test was written: the first two blocks (the
  demo and test one-liners: venv + pip + demo.py / pytest; CI itself runs the tests) and the
  install block of section 1.1 (venv + pip install -r requirements.txt: CI does that).
- Every other block runs as `bash -euo pipefail -c BLOCK` in one temporary working folder (the
  README's relative paths `./scripts`, `experiments/`, ... land there: it holds symlinks to the
  repository's code, so the repository stays clean), with one temporary $ML_DATA.
- The data is tiny and written here, in the publishers' exact formats (tests/readme_data.py), into
  $ML_DATA/downloads, so `./scripts/create_datasets.py` works offline, plus the custom folders
  $ML_DATA/mydataset/{train,unlabeled,test}. It is big enough for the README's own label and
  validation counts (250, 450, --label_size=500, -50, -500), which therefore stay as written.
- The commands are changed only by the table SIZES (sizes and durations, each explained), the
  training flags TRAINING (appended to every training command), and the placeholders a user fills
  in (`<model_name>`, the checkpoint number), which are replaced by the real run folder and its
  newest checkpoint. The TensorBoard server listens on a free port of 127.0.0.1 instead of 6007;
  the test asks its HTTP API for the runs and tags written by the training commands, then stops it.
"""
import glob
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np

import readme_data
from conftest import REPO, free_port

README = os.path.join(REPO, 'README.md')
# What the README's relative paths need: linked into the working folder.
LINKED = ('scripts', 'fully_supervised', 'libml', 'realmix.py', 'filter_dataset.py')

SKIPPED_ONE_LINERS = [
    'python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt && python demo.py',
    'python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt && python -m pytest -q tests',
]
INSTALL_HEADING = '### 1.1.'

UNLABEL_SIZE = readme_data.cifar10_train_count() - 250   # unlabeled images of cifar10.1@250

# (README text, replacement, why). Only sizes and durations. Each entry must still match the
# README (a stale entry fails the test, so the table follows the README).
SIZES = [
    ('for seed in 1 2 3 4 5;', 'for seed in 1 3;',
     'runs: 2 of the 5 seeds of each split loop; seed 1 is used by sections 1.3 and 2.3 '
     '(cifar10.1@250), seed 3 by 1.3 and 3.2 (mydataset.3@450)'),
    ('for size in 250 500 1000 2000 4000;', 'for size in 250;',
     'runs: one label count, the one sections 1.3 and 2.3 use'),
    ('--aug_copy=50', '--aug_copy=2', 'size: 2 augmented copies of each unlabeled image, not 50'),
    ('_aug50', '_aug2', 'size: the dataset names that follow from --aug_copy=2'),
    ('--filters=32', '--filters=4', 'size: model width (4 filters in the first stage, not 32)'),
    ('--unlabel_size=49750', f'--unlabel_size={UNLABEL_SIZE}',
     'size: the unlabeled count of cifar10.1@250 in the tiny CIFAR-10 (still checked by the script)'),
]
# Appended to every training command (realmix.py / fully_supervised/fs_*.py without
# --perform_inference): durations and sizes. 1 kimg = 1024 images: 64 steps of 16, one
# evaluation, one checkpoint (tf/model.ckpt-00001024).
TRAINING = [
    ('--train_kimg=1', 'duration: 1 kimg instead of 65536'),
    ('--report_kimg=1', 'duration: one evaluation (and TensorBoard scalars) at the end'),
    ('--save_kimg=1', 'duration: one checkpoint at the end'),
    ('--batch=16', 'size: 16 labeled images per step instead of 64'),
    ('--repeat=1', 'size: model depth, 1 residual block per stage instead of 4 (halves the '
                   'tracing time of the training step)'),
]
# Also appended where the README relies on the default width (32 filters): see --filters in SIZES.
TRAINING_FILTERS = '--filters=4'
TRAINING_RE = re.compile(r'(^|\s)(python3? +)?(\./)?(realmix\.py|fully_supervised/fs_\w+\.py)\s')
# Not a size: the TensorBoard server gets a free local port (6007 may be taken on a CI machine).
TENSORBOARD_PORT = '--port 6007'
TENSORBOARD_TIMEOUT = 120          # seconds for the server to list the runs and tags
BLOCK_TIMEOUT = 900                # seconds per block (a loaded machine is slow to start TF)


# ----------------------------------------------------------------------------------------------
# Parsing.

def readme_blocks(path=README):
    """[(heading, code)] of the fenced ```bash blocks, in order; heading = the last one above."""
    blocks, heading, code = [], '', None
    with open(path, encoding='utf-8') as f:
        for line in f:
            stripped = line.strip()
            if code is None:
                if stripped.startswith('#') and not stripped.startswith('#!'):
                    heading = stripped
                if stripped == '```bash':
                    code = []
                elif stripped.startswith('```'):
                    code = False  # another fence: skip to its end
            elif code is False:
                if stripped == '```':
                    code = None
            elif stripped == '```':
                blocks.append((heading, ''.join(code)))
                code = None
            else:
                code.append(line)
    assert code is None, f'{path}: unterminated code fence'
    return blocks


def blocks_to_run(blocks):
    """Checks the skipped blocks and returns the others [(heading, code)]."""
    assert len(blocks) > 3, blocks
    for (heading, code), expected in zip(blocks[:2], SKIPPED_ONE_LINERS):
        assert code.strip() == expected, (
            f'the first two ```bash blocks of README.md are skipped by this test as the demo and '
            f'test one-liners; one changed:\n{code}\nexpected:\n{expected}\nUpdate '
            'tests/test_readme.py (run it here if it is not a venv/pip one-liner).')
    install = [i for i, (heading, _) in enumerate(blocks) if heading.startswith(INSTALL_HEADING)]
    assert len(install) == 1, f'expected one ```bash block under "{INSTALL_HEADING}"'
    code = blocks[install[0]][1]
    assert 'pip install -r requirements.txt' in code and 'python3 -m venv' in code, code
    assert install[0] >= 2
    return [b for i, b in enumerate(blocks) if i >= 2 and i != install[0]]


def is_training(line):
    return bool(TRAINING_RE.search(line)) and '--perform_inference' not in line


def substitute(code):
    """The block with the sizes of SIZES and the training flags of TRAINING (no placeholders)."""
    for old, new, _ in SIZES:
        code = code.replace(old, new)
    lines = []
    for line in code.splitlines():
        if is_training(line):
            assert not line.rstrip().endswith(('\\', '&', ';')) and '#' not in line, (
                f'a training command this test cannot extend: {line}')
            extra = [flag for flag, _ in TRAINING]
            extra += [] if '--filters' in line else [TRAINING_FILTERS]
            line = line.rstrip() + ' ' + ' '.join(extra)
        if line.lstrip().startswith('tensorboard '):
            assert TENSORBOARD_PORT in line, line
        lines.append(line)
    return '\n'.join(lines) + '\n'


def fill_placeholders(code, workdir):
    """`<model_name>` -> the one run folder of that dataset; `model.ckpt-NNNNNNNN` -> the newest
    checkpoint of that run (both exist only once the README's training commands have run)."""
    def run_folder(match):
        dataset = match.group(1)
        folder = os.path.join(workdir, dataset)
        runs = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))) \
            if os.path.isdir(folder) else []
        assert len(runs) == 1, f'<model_name>: expected one run folder in {folder}, found {runs}'
        return f'{dataset}/{runs[0]}'

    code = re.sub(r'((?:\./)?experiments/[^/\s]+)/<model_name>', run_folder, code)

    def checkpoint(match):
        tf_dir = os.path.join(workdir, match.group(1))
        found = sorted(glob.glob(os.path.join(glob.escape(tf_dir), 'model.ckpt-*.index')))
        assert found, f'no checkpoint in {tf_dir}'
        return match.group(1) + '/' + os.path.basename(found[-1])[:-len('.index')]

    code = re.sub(r'([^\s=]+/tf)/model\.ckpt-\d{8}', checkpoint, code)
    assert not re.search(r'<[A-Za-z_]+>', code), f'an unfilled placeholder:\n{code}'
    return code


def test_readme_blocks_and_substitutions():
    """Fast: the skipped blocks are the expected ones and every entry of the tables still applies."""
    run = blocks_to_run(readme_blocks())
    text = ''.join(code for _, code in run)
    for old, _, why in SIZES:
        assert old in text, f'SIZES entry {old!r} ({why}) no longer matches README.md'
    substituted = ''.join(substitute(code) for _, code in run)
    for old, _, _ in SIZES:
        assert old not in substituted
    training = [line for line in substituted.splitlines() if is_training(line)]
    assert len(training) >= 4, training
    for line in training:
        assert all(flag in line for flag, _ in TRAINING) and '--filters=4' in line, line
    assert sum(line.lstrip().startswith('tensorboard ') for line in substituted.splitlines()) == 1


# ----------------------------------------------------------------------------------------------
# Running.

def tail(text, n=4000):
    return text if len(text) <= n else '...' + text[-n:]


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read().decode())


def expected_tensorboard_runs(workdir):
    """TensorBoard run names (folders of event files, relative to --logdir) written so far."""
    logdir = os.path.join(workdir, 'experiments')
    events = glob.glob(os.path.join(glob.escape(logdir), '**', 'events.out.tfevents.*'),
                       recursive=True)
    return sorted({os.path.relpath(os.path.dirname(e), logdir).replace(os.sep, '/') for e in events})


def run_tensorboard(code, workdir, env, log_path):
    """Starts the block (a server) on a free local port, waits until its HTTP API lists every run
    written so far with `accuracy_test`, stops it. Returns (ok, message)."""
    port = free_port()
    code = code.replace(TENSORBOARD_PORT, f'--port {port} --host 127.0.0.1')
    expected = expected_tensorboard_runs(workdir)
    if not expected:
        return False, 'no event files under experiments/ for TensorBoard to show', code
    with open(log_path, 'w') as log:
        server = subprocess.Popen(['bash', '-euo', 'pipefail', '-c', code], cwd=workdir, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    last = None
    try:
        deadline = time.time() + TENSORBOARD_TIMEOUT
        while time.time() < deadline:
            if server.poll() is not None:
                return False, f'tensorboard exited with {server.returncode}', code
            try:
                runs = get_json(f'http://127.0.0.1:{port}/data/runs')
                tags = get_json(f'http://127.0.0.1:{port}/data/plugin/scalars/tags')
                last = {'runs': runs, 'tags': {r: sorted(t) for r, t in tags.items()}}
                # RUN/tf has accuracy_test; RUN/hparams (the HParams session) its own copy.
                missing = [r for r in expected if r not in runs or not {
                    'accuracy_test', 'hparams/accuracy_test'} & set(tags.get(r, {}))]
                if not missing:
                    return True, f'runs and accuracy_test listed: {expected}', code
            except OSError:
                pass  # not listening yet
            time.sleep(1)
        return False, (f'after {TENSORBOARD_TIMEOUT} s, TensorBoard did not list every run with '
                       f'accuracy_test; expected {expected}; last answer {last}'), code
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server's own process group
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def make_workdir(tmp_path):
    workdir = tmp_path / 'work'
    workdir.mkdir()
    for name in LINKED:
        os.symlink(os.path.join(REPO, name), workdir / name)
    return str(workdir)


def block_env(ml_data):
    env = dict(os.environ, ML_DATA=str(ml_data), TF_CPP_MIN_LOG_LEVEL='2')
    env.pop('PYTHONPATH', None)  # the README says it is not needed
    # `python`, `tensorboard` and the scripts' `#!/usr/bin/env python3` find this interpreter.
    env['PATH'] = os.path.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    return env


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_readme_commands_run(tmp_path):
    start, cpu_start = time.time(), children_cpu()
    ml_data = tmp_path / 'ml_data'
    # The tiny archives and folders (a few seconds).
    archives = readme_data.write_archives(str(ml_data / 'downloads'))
    assert archives == ['cifar-10-python.tar.gz', 'cifar-100-python.tar.gz', 'extra_32x32.mat',
                        'stl10_binary.tar.gz', 'test_32x32.mat', 'train_32x32.mat']
    readme_data.write_mydataset(str(ml_data / 'mydataset'))
    workdir = make_workdir(tmp_path)
    env = block_env(ml_data)
    print(f'\ntiny data written in {time.time() - start:.1f} s')

    results, failures = [], []
    for number, (heading, original) in enumerate(blocks_to_run(readme_blocks()), 1):
        began, cpu_began = time.time(), children_cpu()
        code = substitute(original)
        try:
            code = fill_placeholders(code, workdir)
        except AssertionError as e:
            failures.append(f'block {number} ({heading}): {e}\n{code}')
            results.append((number, heading, 'placeholder', 0.0, 0.0))
            continue
        if code.lstrip().startswith('tensorboard '):
            ok, message, code = run_tensorboard(code, workdir, env, str(tmp_path / 'tensorboard.log'))
            if not ok:
                log = (tmp_path / 'tensorboard.log').read_text(errors='replace')
                failures.append(f'block {number} ({heading}):\n{code}\n{message}\n'
                                f'--- server output:\n{tail(log)}')
            results.append((number, heading, 'ok' if ok else 'FAILED', time.time() - began,
                            children_cpu() - cpu_began))
            continue
        try:
            done = subprocess.run(['bash', '-euo', 'pipefail', '-c', code], cwd=workdir, env=env,
                                  capture_output=True, text=True, timeout=BLOCK_TIMEOUT)
            rc, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as e:
            rc, out, err = 'timeout', str(e.stdout or ''), str(e.stderr or '')
        results.append((number, heading, rc, time.time() - began, children_cpu() - cpu_began))
        if rc != 0:
            failures.append(f'block {number} ({heading}) exited {rc}:\n{code}\n'
                            f'--- stdout:\n{tail(out)}\n--- stderr:\n{tail(err)}')

    print(f'\nREADME blocks: {time.time() - start:.0f} s wall, {children_cpu() - cpu_start:.0f} s '
          'CPU of the commands (wall s, CPU s, exit status, section):')
    for number, heading, rc, seconds, cpu in results:
        print(f'  {number:2d} {seconds:6.1f} {cpu:6.1f}  {rc}  {heading}')
    for check in OUTPUT_CHECKS:  # all of them, also after a failed block: every problem shows
        try:
            check(str(ml_data), workdir)
        except (AssertionError, OSError) as e:
            failures.append(f'outputs, {check.__doc__}: {type(e).__name__}: {e}')
    assert not failures, '\n\n'.join(failures)


# ----------------------------------------------------------------------------------------------
# What the commands must have written.

def meta(path):
    with open(path + '.json', encoding='utf-8') as f:
        return json.load(f)


def one_run(workdir, dataset, prefix='RealMix_'):
    runs = glob.glob(os.path.join(glob.escape(os.path.join(workdir, dataset)), prefix + '*'))
    assert len(runs) == 1, f'{dataset}: runs {runs}'
    run = runs[0]
    assert os.path.exists(os.path.join(run, 'args', 'args.json'))
    assert os.path.exists(os.path.join(run, 'tf', 'model.ckpt-00001024.index')), os.listdir(
        os.path.join(run, 'tf'))
    assert glob.glob(os.path.join(glob.escape(run), 'tf', 'events.out.tfevents.*'))
    return run


def exists(ml_data, *parts):
    """The record file $ML_DATA/PARTS, which must exist with its metadata file."""
    path = os.path.join(ml_data, *parts)
    assert os.path.exists(path) and os.path.exists(path + '.json'), f'missing {path}'
    return path


def check_datasets(ml_data, workdir):
    """1.2.0: every public dataset, and the splits of the (substituted) loops"""
    for name, parts in (('digits', 'train test'), ('cifar10', 'train test'),
                        ('cifar100', 'train test'), ('svhn', 'train test extra'),
                        ('stl10', 'train test unlabeled')):
        for part in parts.split():
            exists(ml_data, f'{name}-{part}.tfrecord')
        assert os.path.exists(os.path.join(ml_data, f'{name}_class_mappings.json')), name
    assert meta(exists(ml_data, 'cifar10-train.tfrecord'))['count'] == \
        readme_data.cifar10_train_count()
    # The loop runs its commands in the background (`&` then `wait`), so a failed one does not
    # fail the block: its output is what shows it ran.
    for name in ('svhn', 'cifar10'):
        for seed in (1, 3):
            assert meta(exists(ml_data, 'SSL', f'{name}.{seed}@250-label.tfrecord'))['count'] == 250
            exists(ml_data, 'SSL', f'{name}.{seed}@250-unlabel.tfrecord')


def check_custom(ml_data, workdir):
    """1.2.1: renamed images, the custom dataset and its splits (the 50 held-out images first)"""
    root = os.path.join(ml_data, 'mydataset')
    pngs = glob.glob(os.path.join(glob.escape(root), '**', '*.png'), recursive=True)
    assert len(pngs) == sum(readme_data.mydataset_counts().values()), len(pngs)
    for png in pngs:
        rel = os.path.relpath(png, root).split(os.sep)
        want = r'\d+\.png' if rel[0] == 'unlabeled' else r'\d+_' + re.escape(rel[1]) + r'\.png'
        assert re.fullmatch(want, rel[-1]), f'not renamed: {png}'
    assert glob.glob(os.path.join(glob.escape(ml_data), 'mydataset', 'rename_log-*.tsv'))
    assert meta(exists(ml_data, 'mydataset-train.tfrecord'))['count'] == readme_data.MYDATASET_TRAIN
    exists(ml_data, 'mydataset-unlabeled.tfrecord')
    for seed in (1, 3):
        with open(os.path.join(ml_data, 'SSL', f'mydataset.{seed}@450-map.json')) as f:
            split = json.load(f)
        assert split['max_valid'] == 50 and len(split['label']) == 450, seed


def check_augmented(ml_data, workdir):
    """1.3: the augmented datasets (the originals and 2 copies of each)"""
    assert meta(exists(ml_data, 'SSL', 'cifar10.1@250-unlabel.tfrecord'))['count'] == UNLABEL_SIZE
    augmented = meta(exists(ml_data, 'SSL', 'cifar10_aug2.1@250-unlabel.tfrecord'))
    assert augmented['count'] == 3 * UNLABEL_SIZE
    exists(ml_data, 'SSL', 'cifar10_aug2.1@250-label.tfrecord')
    for name in ('cifar10_aug2.3@450', 'mydataset_aug2.3@450'):
        exists(ml_data, 'SSL', f'{name}-label.tfrecord')
        exists(ml_data, 'SSL', f'{name}-unlabel.tfrecord')


def check_training(ml_data, workdir):
    """2.1, 2.2, 3.2: the training runs, each with its arguments, checkpoint and events"""
    one_run(workdir, 'experiments/cifar10_aug2.3@450-50')
    one_run(workdir, 'experiments/fs/mydataset-50', 'FSBaseline_')
    one_run(workdir, 'experiments/fs/mydataset-50', 'FSMixup_')
    one_run(workdir, 'experiments/mydataset_aug2.3@450-50')


def check_mismatch(ml_data, workdir):
    """2.3: the filtered cifar6 files (six classes, renumbered 0..5; out-of-distribution images
    -1), the augmented mismatch dataset and its run, whose model has 6 outputs"""
    with open(os.path.join(ml_data, 'cifar10_class_mappings.json'), encoding='utf-8') as f:
        names = [n for _, n in sorted(json.load(f).items(), key=lambda kv: int(kv[0]))]
    for path in (('SSL', 'cifar6.1@250-label.tfrecord'), ('cifar6-test.tfrecord',)):
        facts = meta(exists(ml_data, *path))
        assert set(facts['label_counts']) <= set('012345') and facts['nclass'] == 6, facts
        assert facts['class_names'] == names[2:8], facts
    for mismatch, ood in ((0, []), (25, ['0']), (50, ['0', '1']), (75, ['0', '1', '8']),
                          (100, ['0', '1', '8', '9'])):
        facts = meta(exists(ml_data, 'SSL', f'cifar6_mismatch{mismatch}.1@250-unlabel.tfrecord'))
        assert [c for c, k in facts['class_map'].items() if k == -1] == ood, facts
        assert ('-1' in facts['label_counts']) == bool(ood) and facts['nclass'] == 6, facts
    exists(ml_data, 'SSL', 'cifar6_mismatch50_aug2.1@250-unlabel.tfrecord')
    run = one_run(workdir, 'experiments/cifar6_mismatch50_aug2.1@250-500')
    with open(os.path.join(run, 'args', 'args.json'), encoding='utf-8') as f:
        assert json.load(f)['nclass'] == 6


def check_evaluation(ml_data, workdir):
    """3.2 and 3.4: the predictions of the 40 test images and the accuracy summary"""
    n_test = readme_data.MYDATASET_TEST_PER_CLASS * len(readme_data.MYDATASET_CLASSES)
    probs = np.load(os.path.join(workdir, 'mydataset_aug2.3@450-50_pred.npy'))
    assert probs.shape == (n_test, len(readme_data.MYDATASET_CLASSES)), probs.shape
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-4)
    with open(os.path.join(workdir, 'mydataset_aug2.3@450-50_pred.csv'), encoding='utf-8') as f:
        assert len(f.read().strip().splitlines()) == n_test + 1
    run = one_run(workdir, 'experiments/mydataset_aug2.3@450-50')
    with open(os.path.join(run, 'stats', 'accuracy.json'), encoding='utf-8') as f:
        assert set(json.load(f)) == {'last01', 'last10', 'last20', 'last50'}


def check_export(ml_data, workdir):
    """3.3: the exported SavedModel predicts the test images as the checkpoint did in 3.2"""
    exported = os.path.join(workdir, 'exported')
    assert os.path.exists(os.path.join(exported, 'mydataset', '1', 'saved_model.pb'))
    assert os.path.exists(os.path.join(exported, 'mydataset', '1', 'model.tflite'))
    np.testing.assert_allclose(np.load(os.path.join(exported, 'mydataset_aug2.3@450-50_pred.npy')),
                               np.load(os.path.join(workdir, 'mydataset_aug2.3@450-50_pred.npy')),
                               atol=1e-5)


OUTPUT_CHECKS = [check_datasets, check_custom, check_augmented, check_training, check_mismatch,
                 check_evaluation, check_export]

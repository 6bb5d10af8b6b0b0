"""Issue 10 "[faults]", data scripts: bad inputs and faults a user meets end in one line on stderr
that names the file, flag or value and says what to do (exit 2; 130 on Ctrl-C, 143 on SIGTERM), and
nothing already written is lost or half written. One section per item of the issue.

We run as root here, so chmod does not stop us: a read-only or unreadable path is simulated with
paths that are folders, files where a folder is expected, or a monkeypatched `os.access`/`open`.
"""
import glob
import json
import os
import re
import resource
import signal
import struct
import subprocess
import sys
import tarfile
import time
import zlib

import numpy as np
import pytest

from conftest import REPO, make_images, run_script, write_records
from libml import files, names, records
from libml.sources import archives, cifar, digits, stl10, svhn
from libml.utils import UserError
from test_create_datasets import write_tar
from test_create_split import cs

from libml import class_filter as fd

CREATE_SPLIT = os.path.join(REPO, 'scripts', 'create_split.py')
CREATE_DATASETS = os.path.join(REPO, 'scripts', 'create_datasets.py')
MAKE_AUG_COPY = os.path.join(REPO, 'scripts', 'make_aug_copy.py')
FILTER = os.path.join(REPO, 'filter_dataset.py')
RENAME = os.path.join(REPO, 'scripts', 'rename_files.py')


def error_line(result, prog, status=2):
    """The one line a failed command printed about itself (TensorFlow's start-up chatter and
    progress bars aside): the exit status, no traceback, no "Exception ignored"."""
    assert result.returncode == status, \
        f'exit {result.returncode}\n{result.stdout}\n{result.stderr}'
    assert 'Traceback' not in result.stderr and 'Exception ignored' not in result.stderr, \
        result.stderr
    lines = [line for line in result.stderr.replace('\r', '\n').splitlines()
             if line.startswith(f'{prog}: ')]
    assert len(lines) == 1, result.stderr
    return lines[0]


def leftovers(folder):
    """Temporaries (hidden .partial-* files) under `folder`."""
    return sorted(glob.glob(os.path.join(str(folder), '**', '.*partial-*'), recursive=True))


def labeled_file(path, n=60, nclass=10, shape=(8, 8, 1), seed=0):
    images, labels = make_images(n, shape, nclass, seed=seed)
    return write_records(str(path), images, labels, nclass)


# ----------------------------------------------------------------------------------------------
# 5. A full disk (here: a file-size limit, `ulimit -f`) while writing.

def run_with_file_limit(args, limit_bytes):
    """Runs `python ARGS` as `ulimit -f` would: a write past `limit_bytes` fails with EFBIG
    (Python ignores SIGXFSZ), as TensorFlow's OutOfRangeError or as OSError."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env, preexec_fn=limit,
                          capture_output=True, text=True, timeout=600)


def test_full_disk_create_datasets_and_filter(ml_data, tmp_path):
    result = run_with_file_limit([CREATE_DATASETS, 'digits'], 64 << 10)  # train is 220 kB
    line = error_line(result, 'create_datasets.py')
    assert 'digits-train.tfrecord' in line and 'ulimit' in line and 'free space' in line
    assert os.listdir(ml_data) == []

    source = labeled_file(tmp_path / 'in.tfrecord', n=2000)  # about 200 kB
    out = ml_data / 'out.tfrecord'
    result = run_with_file_limit([FILTER, '--class_filter=0,1,2,3,4,5,6,7,8',
                                  f'--filter_dataset={source}', f'--save_name={out}'], 64 << 10)
    assert 'out.tfrecord: File too large' in error_line(result, 'filter_dataset.py')
    assert os.listdir(ml_data) == []


def test_full_disk_create_split_and_make_aug_copy(ml_data):
    # create_split spills a full copy of its input first: that copy hits the limit.
    labeled_file(ml_data / 'toy-train.tfrecord', n=2000)
    result = run_with_file_limit([CREATE_SPLIT, '--seed=1', '--label_split_size=20',
                                  ml_data / 'SSL' / 'toy', ml_data / 'toy-train.tfrecord'],
                                 64 << 10)
    assert 'toy.1@20-unlabel.tfrecord: File too large' in error_line(result, 'create_split.py')
    assert os.listdir(ml_data / 'SSL') == []

    stem = os.path.join(ml_data, 'SSL', 'toy.1@20')
    x, y = make_images(20, (16, 16, 3), 10, seed=1)
    write_records(stem + '-label.tfrecord', x, y, 10)
    x, y = make_images(300, (16, 16, 3), 10, seed=2)
    write_records(stem + '-unlabel.tfrecord', x, y, 10)
    before = sorted(os.listdir(ml_data / 'SSL'))
    result = run_with_file_limit([MAKE_AUG_COPY, '--aug_dataset=toy.1@20', '--aug_copy=2'],
                                 256 << 10)
    assert 'toy_aug2.1@20-unlabel.tfrecord: File too large' in error_line(result,
                                                                          'make_aug_copy.py')
    assert sorted(os.listdir(ml_data / 'SSL')) == before


def test_storage_errors_names_the_output_for_tensorflow_and_os_errors(tmp_path):
    """The one mapping the trainer also uses around checkpoint saves."""
    import tensorflow as tf
    path = str(tmp_path / 'tf' / 'model.ckpt-00000064')
    tmp = files.temporary_name(path)
    cases = [
        (tf.errors.ResourceExhaustedError(None, None, f'{tmp}; No space left on device'),
         f'cannot write {path}: No space left on device; the disk is full'),
        (tf.errors.OutOfRangeError(None, None, f'{path}_temp/part-0.index; File too large'),
         f'cannot write {path}: File too large; the file is larger than the system allows'),
        (tf.errors.FailedPreconditionError(None, None, '{{function_node x}} /data/in.tfrecord; '
                                           'Is a directory [Op:IteratorGetNext] name: '),
         '/data/in.tfrecord: Is a directory; it is a folder: give the path of a file.'),
        (PermissionError(13, 'Permission denied', tmp), f'cannot write {path}: Permission denied'),
        (OSError(28, 'No space left on device'), f'cannot write {path}: No space left'),
    ]
    for error, message in cases:
        with pytest.raises(UserError) as e:
            with files.storage_errors(path):
                raise error
        assert str(e.value).startswith(message), str(e.value)
    with pytest.raises(tf.errors.InvalidArgumentError):  # not an I/O failure: left alone
        with files.storage_errors(path):
            raise tf.errors.InvalidArgumentError(None, None, 'shapes do not match')


# ----------------------------------------------------------------------------------------------
# 7. Destinations that cannot be written and record paths that are not readable files.

def test_create_split_into_a_read_only_folder(ml_data, monkeypatch):
    source = labeled_file(ml_data / 'toy-train.tfrecord')
    ssl = ml_data / 'SSL'
    ssl.mkdir()
    # As a user, open() in a read-only folder raises PermissionError; root is never refused, so
    # both the permission check and the refusal are simulated.
    real_access, real_open = os.access, open

    def access(path, mode, **kw):
        return False if os.path.abspath(path) == str(ssl) and mode & os.W_OK else real_access(
            path, mode, **kw)

    def refusing_open(path, *args, **kw):
        if os.path.dirname(os.path.abspath(path)) == str(ssl):
            raise PermissionError(13, 'Permission denied', str(path))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(os, 'access', access)
    monkeypatch.setattr(cs, 'open', refusing_open, raising=False)
    with pytest.raises(UserError, match=rf'folder {ssl} is not writable'):
        cs.create_split(str(ssl / 'toy'), [source], 1, 20, quiet=True)
    assert os.listdir(ssl) == []


def test_create_split_prefix_under_a_file(ml_data):
    labeled_file(ml_data / 'toy-train.tfrecord')
    (ml_data / 'SSL').write_text('not a folder')
    result = run_script(CREATE_SPLIT, '--label_split_size=20', ml_data / 'SSL' / 'toy',
                        ml_data / 'toy-train.tfrecord')
    line = error_line(result, 'create_split.py')
    assert str(ml_data / 'SSL') in line and 'is a file' in line and 'choose another' in line


def test_record_paths_that_are_folders(ml_data):
    folder = ml_data / 'toy-train.tfrecord'
    folder.mkdir()
    with pytest.raises(UserError, match=rf'{folder} is a folder, not a record file'):
        cs.create_split(str(ml_data / 'SSL' / 'toy'), [str(folder)], 1, 20, quiet=True)
    with pytest.raises(UserError, match=rf'{folder} is a folder, not a record file'):
        fd.filter_records(str(folder), str(ml_data / 'o.tfrecord'), '1', quiet=True)
    from libml import datasets
    labeled_file(ml_data / 'toy-test.tfrecord')
    with pytest.raises(UserError, match=rf'--train_record={folder}: {folder} is a folder'):
        datasets.resolve('toy-5', (str(folder), 'toy-test.tfrecord'))
    result = run_script(CREATE_SPLIT, '--label_split_size=20', ml_data / 'SSL' / 'toy', folder)
    assert 'is a folder, not a record file' in error_line(result, 'create_split.py')
    assert sorted(os.listdir(ml_data)) == ['toy-test.tfrecord', 'toy-test.tfrecord.json',
                                           'toy-train.tfrecord']


def test_unreadable_record_files(ml_data, monkeypatch):
    source = labeled_file(ml_data / 'toy-train.tfrecord')
    real_access = os.access
    # chmod 000 does not stop root: the permission check is what is simulated.
    monkeypatch.setattr(os, 'access', lambda path, mode, **kw: False if (
        os.path.abspath(path) == source and mode & os.R_OK) else real_access(path, mode, **kw))
    with pytest.raises(UserError, match=rf'{source} is not readable'):
        cs.create_split(str(ml_data / 'SSL' / 'toy'), [source], 1, 20, quiet=True)
    with pytest.raises(UserError, match=rf'{source} is not readable'):
        fd.filter_records(source, str(ml_data / 'o.tfrecord'), '1', quiet=True)
    from libml import datasets
    with pytest.raises(UserError, match=rf'--train_record=toy-train.tfrecord: {source} is not '):
        datasets.resolve('toy-5', ('toy-train.tfrecord', 'toy-train.tfrecord'))


def test_output_path_that_is_a_folder(ml_data):
    source = labeled_file(ml_data / 'toy-test.tfrecord')
    target = ml_data / 'out.tfrecord'
    target.mkdir()
    with pytest.raises(UserError, match=rf'{target} is a folder; give a file name'):
        fd.filter_records(source, str(target), '1', quiet=True)
    assert sorted(os.listdir(ml_data)) == ['out.tfrecord', 'toy-test.tfrecord',
                                           'toy-test.tfrecord.json']


# ----------------------------------------------------------------------------------------------
# 8. Malformed or lying metadata files.

GOOD_META = {'count': 60, 'height': 8, 'width': 8, 'channels': 1, 'nclass': 10,
             'class_names': None, 'label_counts': {str(c): 6 for c in range(10)}}

BAD_METAS = [
    ([GOOD_META], 'a JSON list'),
    ({k: v for k, v in GOOD_META.items() if k != 'height'}, '"height" is missing'),
    (dict(GOOD_META, count='60'), '"count" is "60"'),
    (dict(GOOD_META, count=True), '"count" is true'),
    (dict(GOOD_META, width=0), '"width" is 0'),
    (dict(GOOD_META, channels=7), '"channels" is 7'),
    (dict(GOOD_META, nclass='ten'), '"nclass" is "ten"'),
    (dict(GOOD_META, class_names='cat'), '"class_names" is not a list'),
    (dict(GOOD_META, class_names=['a', 'b']), 'lists 2 names but "nclass" is 10'),
    (dict(GOOD_META, label_counts=[6] * 10), '"label_counts" is not of the form'),
    (dict(GOOD_META, label_counts={'0': 60, 'x': 1}), '"label_counts" is not of the form'),
    (dict(GOOD_META, label_counts={'12': 60}), 'label 12, outside -1..9'),
    (dict(GOOD_META, label_counts={'0': 59}), 'add up to 59, not "count" 60'),
]


def write_meta(path, meta):
    with open(names.meta_path(str(path)), 'w', encoding='utf-8') as f:
        json.dump(meta, f)


@pytest.mark.parametrize('meta, problem', BAD_METAS, ids=[p for _, p in BAD_METAS])
def test_malformed_metadata_is_one_error_naming_the_file(ml_data, meta, problem):
    source = labeled_file(ml_data / 'toy-train.tfrecord')
    write_meta(source, meta)
    mpath = names.meta_path(source)
    for call in (lambda: records.read_meta(source),
                 lambda: cs.create_split(str(ml_data / 'SSL' / 'toy'), [source], 1, 20,
                                         quiet=True),
                 lambda: fd.filter_records(source, str(ml_data / 'o.tfrecord'), '1', quiet=True)):
        with pytest.raises(UserError) as e:
            call()
        message = str(e.value)
        assert f'metadata file {mpath} is not valid' in message and problem in message, message
        assert 'delete it' in message and 'scanned' in message


def test_malformed_metadata_in_the_trainer_and_on_the_command_line(ml_data):
    from conftest import make_ssl_dataset
    from libml import datasets
    stem = make_ssl_dataset(str(ml_data), name='toy')
    label = names.split_path(stem, 'label')
    write_meta(label, {'count': 12, 'width': 8, 'channels': 1})  # no height
    with pytest.raises(UserError, match=r'toy.1@12-label.tfrecord.json is not valid '
                                        r'\("height" is '):
        datasets.resolve(f'{stem}-6')
    source = labeled_file(ml_data / 'toy-train.tfrecord')
    write_meta(source, [1, 2])
    result = run_script(CREATE_SPLIT, '--label_split_size=20', ml_data / 'SSL' / 'toy', source)
    assert 'toy-train.tfrecord.json is not valid' in error_line(result, 'create_split.py')
    result = run_script(FILTER, '--class_filter=1', f'--filter_dataset={source}',
                        f'--save_name={ml_data / "o.tfrecord"}')
    assert 'toy-train.tfrecord.json is not valid' in error_line(result, 'filter_dataset.py')


@pytest.mark.parametrize('lie, words', [
    (dict(count=50, label_counts={str(c): 5 for c in range(10)}), ['holds 60 records', 'says 50']),
    (dict(label_counts={'0': 15, '1': 45}), ['holds the labels', "'9': 6"]),
    (dict(nclass=5, label_counts=None), ['holds label 9', 'says 5 classes']),
])
def test_create_split_stops_when_metadata_disagrees_with_the_records(ml_data, lie, words):
    source = labeled_file(ml_data / 'toy-train.tfrecord')
    write_meta(source, dict(GOOD_META, **lie))
    with pytest.raises(UserError) as e:
        cs.create_split(str(ml_data / 'SSL' / 'toy'), [source], 1, 20, quiet=True)
    for word in words + [names.meta_path(source), 'delete it']:
        assert word in str(e.value)
    assert os.listdir(ml_data / 'SSL') == []


def test_writers_state_what_they_wrote_not_what_the_input_claimed(ml_data):
    """A consistent but wrong metadata file (4x4x3 images, 3 classes named a, b, c) beside 8x8x1
    images of 10 classes: the new files' metadata must state the truth."""
    source = labeled_file(ml_data / 'toy-train.tfrecord')
    lie = dict(GOOD_META, height=4, width=4, channels=3, nclass=3, class_names=['a', 'b', 'c'],
               label_counts=None)
    write_meta(source, lie)
    truth = {'height': 8, 'width': 8, 'channels': 1, 'nclass': 10, 'class_names': None}

    def facts(path):
        meta = records.read_meta(str(path))
        return {k: meta[k] for k in truth}

    fd.filter_records(source, str(ml_data / 'f.tfrecord'), '0,1,2', quiet=True)
    assert facts(ml_data / 'f.tfrecord') == dict(truth, nclass=3, class_names=['a', 'b', 'c'])
    write_meta(source, dict(lie, nclass=None, class_names=None))
    fd.filter_records(source, str(ml_data / 'h.tfrecord'), '7', quiet=True, relabel=False)
    assert facts(ml_data / 'h.tfrecord') == dict(truth, nclass=None)
    # Renumbered (the default), class 7 is the one class 0 of the output, named by its old index.
    fd.filter_records(source, str(ml_data / 'i.tfrecord'), '7', quiet=True)
    assert facts(ml_data / 'i.tfrecord') == dict(truth, nclass=1, class_names=['7'])

    # create_split reads every label: the class count is the true one (the lie is refused above)
    write_meta(source, dict(lie, nclass=10, class_names=None))
    cs.create_split(str(ml_data / 'SSL' / 'toy'), [source], 1, 20, quiet=True)
    for part in ('label', 'unlabel'):
        assert facts(ml_data / 'SSL' / f'toy.1@20-{part}.tfrecord') == truth

    # make_aug_copy copies the label file: not its metadata file.
    label = names.split_path('toy.1@20', 'label')
    write_meta(label, dict(records.read_meta(label), height=4, width=4, channels=3, nclass=3,
                           class_names=['a', 'b', 'c'], label_counts=None))
    result = run_script(MAKE_AUG_COPY, '--aug_dataset=toy.1@20', '--aug_copy=1', '--augment=svhn')
    assert result.returncode == 0, result.stderr
    assert facts(names.split_path('toy_aug1.1@20', 'label')) == truth


def test_writer_refuses_records_of_mixed_shapes(ml_data):
    a = labeled_file(ml_data / 'a-train.tfrecord', n=20, shape=(8, 8, 1))
    b = labeled_file(ml_data / 'b-train.tfrecord', n=20, shape=(6, 6, 1))
    write_meta(b, dict(records.read_meta(b), height=8, width=8))  # says 8x8x1, as a's
    with pytest.raises(UserError, match=r'record \d+ holds a \dx\dx1 image, the records before '
                                        r'it \dx\dx1: an input holds images of another shape'):
        cs.create_split(str(ml_data / 'SSL' / 'ab'), [a, b], 1, 20, quiet=True)
    assert os.listdir(ml_data / 'SSL') == []


# ----------------------------------------------------------------------------------------------
# 9. Required flags.

@pytest.mark.parametrize('script, args, words', [
    (FILTER, ['--filter_dataset=in.tfrecord', '--save_name=out.tfrecord'],
     ['--class_filter is required']),
    (FILTER, ['--class_filter=1', '--save_name=out.tfrecord'], ['--filter_dataset is required']),
    (FILTER, ['--class_filter=1', '--filter_dataset=in.tfrecord'], ['--save_name is required']),
    (CREATE_SPLIT, ['SSL/toy', 'toy-train.tfrecord'], ['--label_split_size is required']),
    (CREATE_SPLIT, ['--label_split_size=x', 'SSL/toy', 'toy-train.tfrecord'],
     ['--label_split_size=x', '--help']),
    (MAKE_AUG_COPY, [], ['--aug_dataset is required']),
    (MAKE_AUG_COPY, ['--aug_dataset=toy.1@20', '--aug_copy='], ['--aug_copy=', '--help']),
    (RENAME, ['--index=0'], ['--targetdir is required']),
    (RENAME, ['--targetdir=.', '--filetype=gif'], ['--filetype=gif', 'png']),
])
def test_missing_or_malformed_flags_are_one_line(ml_data, script, args, words):
    result = run_script(script, *args, cwd=ml_data)
    line = error_line(result, os.path.basename(script))
    for word in words:
        assert word in line


# ----------------------------------------------------------------------------------------------
# 10, 11. Ctrl-C and SIGTERM stop create_split with nothing kept; a SIGKILL's temporaries are
# removed by the next run.

@pytest.fixture(scope='module')
def big_input(tmp_path_factory):
    """An input whose split takes a second or two: 40,000 records (50 distinct images)."""
    root = tmp_path_factory.mktemp('big')
    pngs = records.encode_png(make_images(50, (8, 8, 1), 10)[0])
    examples = [records.make_example(png, i % 10) for i, png in enumerate(pngs)]
    path = str(root / 'big-train.tfrecord')
    with records.RecordWriter(path, (8, 8, 1), nclass=10) as w:
        for i in range(40000):
            w.write_serialized(examples[i % 50], i % 10)
    return path


def start_split(ml_data, source, name='big', extra=()):
    env = dict(os.environ, ML_DATA=str(ml_data), TF_CPP_MIN_LOG_LEVEL='2')
    return subprocess.Popen([sys.executable, CREATE_SPLIT, '--seed=1', '--label_split_size=100',
                             *extra, ml_data / 'SSL' / name, source], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def spill_of(ml_data, name='big'):
    """(path, size) of create_split's spill file (the copy of its input), or (None, -1)."""
    for path in glob.glob(str(ml_data / 'SSL' / f'.{name}.1@100-unlabel.tfrecord.partial-*.spill')):
        try:
            return path, os.path.getsize(path)
        except OSError:  # removed meanwhile
            pass
    return None, -1


def wait_for_spill(process, ml_data, name='big', size=1):
    """Waits until the process's spill file holds `size` bytes; returns its path."""
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        spill, spilled = spill_of(ml_data, name)
        if spilled >= size:
            return spill
        time.sleep(0.001)
    raise AssertionError(f'no spill file: {process.communicate()}')


def finished(process):
    out, err = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_ctrl_c_lost_in_a_finaliser_still_stops_create_split(ml_data):
    """The cause of the 1-in-4: a KeyboardInterrupt raised while a weakref callback runs (here,
    deterministically, right after the input is read, where TensorFlow's autograph cache runs
    one) is printed as "Exception ignored" and dropped; the split then finished with exit 0."""
    source = labeled_file(ml_data / 'toy-train.tfrecord', n=200)
    driver = f'''
import os, runpy, signal, sys, weakref
sys.path.insert(0, {REPO!r})
from libml import names, records
real = records.read_records

def read_records(*args, **kwargs):
    yield from real(*args, **kwargs)
    def finaliser():
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100000):  # the handler runs here, inside the weakref callback
            pass
    class Owner:
        pass
    owner = Owner()
    weakref.finalize(owner, finaliser)
    del owner

records.read_records = read_records
sys.argv = [{CREATE_SPLIT!r}, '--seed=1', '--label_split_size=20', {str(ml_data / 'SSL' / 'toy')!r},
            {source!r}]
runpy.run_path({CREATE_SPLIT!r}, run_name='__main__')
'''
    result = run_script('-c', driver)
    assert 'interrupted' in error_line(result, 'create_split.py', status=130)
    assert os.listdir(ml_data / 'SSL') == []


def test_ctrl_c_at_any_moment_stops_create_split(ml_data, big_input):
    """SIGINT at several moments around the end of reading (where the finalisers run) and in
    writing, six runs at once: exit 130, one line, no output and no temporary kept."""
    full = os.path.getsize(big_input) - 16 * 40000  # the spill holds the records unframed
    for batch in ([0, 0.0005, 0.002, 0.01, 0.05, 0.2],):
        runs = {f'big{i}': (start_split(ml_data, big_input, f'big{i}'), d)
                for i, d in enumerate(batch)}
        due, deadline = {}, time.time() + 300
        while len(due) < len(runs) or any(t for t in due.values()):
            assert time.time() < deadline
            for name, (process, delay) in runs.items():
                if name not in due and spill_of(ml_data, name)[1] >= full:
                    due[name] = time.time() + delay  # reading is over: the finalisers run
                if due.get(name) and time.time() >= due[name]:
                    process.send_signal(signal.SIGINT)
                    due[name] = 0
                assert due.get(name) is not None or process.poll() is None, name
            time.sleep(0.001)
        for name, (process, delay) in runs.items():
            result = finished(process)
            assert 'interrupted' in error_line(result, 'create_split.py', status=130), delay
    assert os.listdir(ml_data / 'SSL') == []


def test_sigterm_stops_create_split_like_ctrl_c(ml_data, big_input):
    process = start_split(ml_data, big_input)
    wait_for_spill(process, ml_data, size=1 << 20)
    process.send_signal(signal.SIGTERM)
    line = error_line(finished(process), 'create_split.py', status=143)
    assert 'terminated' in line and 'not kept' in line
    assert os.listdir(ml_data / 'SSL') == []


def test_the_next_run_removes_what_a_sigkill_left(ml_data, big_input):
    process = start_split(ml_data, big_input)
    spill = wait_for_spill(process, ml_data, size=1 << 20)
    process.kill()
    process.wait()
    assert os.path.exists(spill)  # a full copy of the input, left behind
    result = finished(start_split(ml_data, big_input))
    assert result.returncode == 0, result.stderr
    assert f'removed {spill}, left by an interrupted run' in result.stderr
    assert leftovers(ml_data) == []


def test_create_datasets_removes_temporaries_of_a_killed_run(ml_data):
    dead = 999999999  # no such process
    stale = [ml_data / f'.digits-train.tfrecord.partial-{dead}',
             ml_data / f'.digits-train.tfrecord.json.partial-{dead}',
             ml_data / f'.digits_class_mappings.json.partial-{dead}']
    alive = ml_data / f'.digits-test.tfrecord.partial-{os.getppid()}'  # a running writer's
    for path in stale + [alive]:
        path.write_bytes(b'partial')
    digits.create_digits(str(ml_data))
    assert [p for p in stale if p.exists()] == [] and alive.exists()
    assert records.read_meta(str(ml_data / 'digits-train.tfrecord'))['count'] == 1297


# ----------------------------------------------------------------------------------------------
# 12. The record file goes into place before its metadata file.

def test_metadata_never_describes_another_record_file(ml_data, monkeypatch):
    path = labeled_file(ml_data / 'toy-train.tfrecord', n=10)
    images, labels = make_images(5, (8, 8, 1), 10)
    real_replace = os.replace

    def failing_replace(src, dst):
        if dst == path:
            raise KeyboardInterrupt  # stopped just before the record file takes its place
        real_replace(src, dst)

    monkeypatch.setattr(os, 'replace', failing_replace)
    with pytest.raises(KeyboardInterrupt):
        write_records(path, images, labels, 10)
    monkeypatch.setattr(os, 'replace', real_replace)
    assert records.read_meta(path)['count'] == 10  # the old file, as it is
    assert [len(b['label']) for b in records.read_records(path)] == [10]

    # Stopped after the record file took its place, before its metadata file was written.
    real_write_json = records.write_json

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(records, "write_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_records(path, images, labels, 10)
    monkeypatch.setattr(records, "write_json", real_write_json)
    assert records.read_meta(path)['count'] == 5  # scanned: the old metadata file is gone


def test_metadata_older_than_its_record_file_is_not_trusted(ml_data):
    path = labeled_file(ml_data / 'toy-train.tfrecord', n=10)
    other = labeled_file(ml_data / 'other.tfrecord', n=4)
    os.replace(other, path)  # e.g. replaced by hand, or by an older version of these tools
    stamp = os.stat(path).st_mtime
    os.utime(names.meta_path(path), (stamp - 10, stamp - 10))
    meta = records.read_meta(path)
    assert meta['count'] == 4 and meta['label_counts'] == {'0': 1, '1': 1, '2': 1, '3': 1}


# ----------------------------------------------------------------------------------------------
# 13. Archives that decompress to more than the published files hold.

def test_tar_bomb_is_refused_before_it_is_read(ml_data, tmp_path, monkeypatch):
    # 4 MB of zeros compress to 4 kB; with the limit lowered to 64 kB, it stands for the 764 kB
    # archive that inflated to 823 MB against the real limits.
    monkeypatch.setitem(archives.MEMBER_LIMITS, 'cifar-10-batches-py/data_batch_1', 64 << 10)
    archive = write_tar(tmp_path / 'cifar-10-python.tar.gz',
                     {'cifar-10-batches-py/data_batch_1': bytes(4 << 20)})
    assert os.path.getsize(archive) < 64 << 10
    read = []
    real_read = tarfile.ExFileObject.read
    monkeypatch.setattr(tarfile.ExFileObject, 'read',
                        lambda self, size=-1: read.append(size) or real_read(self, size))
    with pytest.raises(UserError) as e:
        cifar.create_cifar10(str(ml_data), str(tmp_path))
    message = str(e.value)
    assert str(archive) in message and 'cifar-10-batches-py/data_batch_1' in message
    assert 'decompression bomb' in message and 'delete it' in message
    assert read == []  # refused on its declared size
    assert os.listdir(ml_data) == []

    # STL-10's unlabeled images are streamed, but are limited too (their exact size).
    monkeypatch.setitem(archives.MEMBER_LIMITS, 'stl10_binary/unlabeled_X.bin',
                        2 * stl10.STL_BYTES)
    archive = write_tar(tmp_path / 'stl10_binary.tar.gz',
                     {'stl10_binary/unlabeled_X.bin': bytes(3 * stl10.STL_BYTES)})
    with pytest.raises(UserError, match='its member stl10_binary/unlabeled_X.bin is larger'):
        stl10.create_stl10(str(ml_data), str(tmp_path))


def svhn_bomb(path, images):
    """A compressed .mat whose X declares one image (its header passes) while its data inflates
    to `images` images of zeros, as a hostile file would, plus a y of one label."""
    import scipy.io
    scipy.io.savemat(path, {'X': np.zeros((32, 32, 3, images), np.uint8)})
    raw = bytearray(path.read_bytes())
    raw[172:176] = (1).to_bytes(4, 'little')  # X's 4th dimension: header, flags, dims tag
    element = zlib.compress(bytes(raw[128:]))
    scipy.io.savemat(path, {'y': np.ones((1, 1))}, do_compression=True)
    y = path.read_bytes()
    path.write_bytes(y[:128] + struct.pack('<II', 15, len(element)) + element + y[128:])


@pytest.mark.parametrize('case', ['labels', 'inflated', 'file size'])
def test_svhn_files_are_bounded_before_they_are_loaded(ml_data, tmp_path, monkeypatch, case):
    """A file declaring more images than the published one, inflating to more than it can hold,
    or larger on disk, is refused by its size and shapes before scipy.io.loadmat sees it."""
    import scipy.io
    monkeypatch.setitem(svhn.PARTS, 'train', 1000)  # 1000 images, 16 MiB to spare: 20 MB
    loaded, real_loadmat = [], scipy.io.loadmat
    monkeypatch.setattr(scipy.io, 'loadmat', lambda path, **kw: loaded.append(path) or
                        real_loadmat(path, **kw))
    for part in ('test', 'extra'):
        scipy.io.savemat(tmp_path / f'{part}_32x32.mat', {'X': np.zeros((32, 32, 3, 1), np.uint8),
                                                          'y': np.ones((1, 1))})
    train = tmp_path / 'train_32x32.mat'
    if case == 'labels':
        scipy.io.savemat(train, {'X': np.zeros((32, 32, 3, 1200), np.uint8),
                                 'y': np.ones((1200, 1))}, do_compression=True)
        words = r'damaged or not the published file \(ValueError: y declares 1,200 images'
    elif case == 'inflated':
        svhn_bomb(train, 8000)  # 25 MB of zeros: 24 kB compressed
        words = r'not the published file: it decompresses to more than 19,857,216 bytes'
    else:
        scipy.io.savemat(train, {'X': np.zeros((32, 32, 3, 1), np.uint8), 'y': np.ones((1, 1))})
        os.truncate(train, 20 << 20)  # sparse: no disk used
        words = r'not the published file: it has 20,971,520 bytes, more than the published one'
    assert os.path.getsize(train) < 64 << 10 or case == 'file size'
    with pytest.raises(UserError, match=rf'^{re.escape(str(train))} is {words}.*delete it'):
        svhn.create_svhn(str(ml_data), str(tmp_path))
    assert loaded == []
    assert os.listdir(ml_data) == []

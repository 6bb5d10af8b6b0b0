"""scripts/create_split.py and libml/splits.py: which records go where, the custom-data rule,
streaming, the CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, assert_ok, assert_user_error, run_script
from libml import records
from libml import splits as cs
from libml.utils import UserError

SCRIPT = os.path.join(REPO, 'scripts', 'create_split.py')


# ----------------------------------------------------------------------------------------------
# Inputs whose every image is unique: image k has k written in its first pixel, so the outputs
# are checked by content, not by trusting the map.

SHAPE = (4, 4, 3)
NAMES = [f'class{i}' for i in range(10)]


def images_for(ids):
    ids = np.asarray(ids)
    images = np.zeros((len(ids),) + SHAPE, np.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = ids // 256, ids % 256
    return images


def write_input(path, labels, first_id=0, class_names=NAMES):
    """A record file whose record i has label labels[i] and content id first_id + i."""
    ids = np.arange(first_id, first_id + len(labels))
    with records.RecordWriter(path, SHAPE, nclass=len(class_names), class_names=class_names) as w:
        for png, label in zip(records.encode_png(images_for(ids)), labels):
            w.write(png, int(label))
    return str(path)


def read_output(path):
    """(content ids, labels) of a record file, in file order."""
    import tensorflow as tf
    ids, labels = [], []
    for batch in records.read_records(str(path)):
        for png in batch['image']:
            pixel = tf.io.decode_png(png).numpy()[0, 0]
            ids.append(int(pixel[0]) * 256 + int(pixel[1]))
        labels.extend(batch['label'].tolist())
    return np.array(ids, np.int64), np.array(labels, np.int64)


def imbalanced_labels(n=300, seed=0):
    """Labels 0..9 with unequal class sizes (class k about (k+1) times as frequent as class 0)."""
    rng = np.random.default_rng(seed)
    p = np.arange(1, 11) / np.arange(1, 11).sum()
    labels = rng.choice(10, size=n, p=p)
    labels[:10] = np.arange(10)  # every class present
    return labels


def split(ml_data, name='cifar10', inputs=None, seed=1, size=50, **kw):
    kw.setdefault('quiet', True)
    return cs.create_split(str(ml_data / 'SSL' / name), inputs, seed, size, **kw)


@pytest.fixture
def cifar_like(ml_data):
    labels = imbalanced_labels()
    return write_input(ml_data / 'cifar10-train.tfrecord', labels), labels


# ----------------------------------------------------------------------------------------------
# Planning.

def test_allocate_follows_distribution_with_largest_remainder():
    assert cs.allocate({0: 500, 1: 300, 2: 200}, 10) == {0: 5, 1: 3, 2: 2}
    # 7 * (0.5, 0.3, 0.2) = 3.5, 2.1, 1.4 -> floors 3, 2, 1; the one left goes to the largest
    # remainder (class 0).
    assert cs.allocate({0: 500, 1: 300, 2: 200}, 7) == {0: 4, 1: 2, 2: 1}
    # A rare class rounds to 0 but still gets one image, taken from the most over-served class.
    assert cs.allocate({0: 1000, 1: 10}, 5) == {0: 4, 1: 1}
    assert cs.allocate({0: 3, 1: 3, 2: 0}, 6) == {0: 3, 1: 3}


def test_allocate_balanced_shares_what_small_classes_cannot_give():
    assert cs.allocate({0: 100, 1: 100, 2: 100}, 30, balanced=True) == {0: 10, 1: 10, 2: 10}
    assert cs.allocate({0: 100, 1: 2, 2: 100}, 30, balanced=True) == {0: 14, 1: 2, 2: 14}
    assert cs.allocate({0: 100, 1: 100, 2: 100}, 31, balanced=True) == {0: 11, 1: 10, 2: 10}


def test_interleave_is_round_robin():
    out = cs.interleave([[10, 11, 12], [20], [], [30, 31]])
    assert out.tolist() == [10, 20, 30, 11, 31, 12]


def test_plan_covers_every_record_once():
    labels = imbalanced_labels(500)
    plan = cs.plan_split(labels, seed=3, size=40)
    everything = np.concatenate([plan['label'], plan['unlabel']])
    assert sorted(everything.tolist()) == list(range(500))
    assert plan['max_valid'] == 460 and plan['pool_size'] == 500


# ----------------------------------------------------------------------------------------------
# Splits written to disk, checked by content.

def test_split_parts_are_disjoint_complete_and_follow_the_classes(ml_data, cifar_like):
    path, labels = cifar_like
    result = split(ml_data, inputs=[path], seed=1, size=50)
    label_ids, label_labels = read_output(result['paths']['label'])
    unlabel_ids, unlabel_labels = read_output(result['paths']['unlabel'])

    # Labeled + validation + training-unlabeled = every input record exactly once, labels intact.
    both = np.concatenate([label_ids, unlabel_ids])
    assert sorted(both.tolist()) == list(range(len(labels)))
    assert (labels[label_ids] == label_labels).all() and (labels[unlabel_ids] == unlabel_labels).all()
    valid, train_unlabeled = unlabel_ids[:100], unlabel_ids[100:]
    assert not set(valid) & set(train_unlabeled) and not set(valid) & set(label_ids)

    # The labeled set follows the class distribution.
    counts = {int(c): int(n) for c, n in zip(*np.unique(labels, return_counts=True))}
    expected = cs.allocate(counts, 50)
    assert {int(c): int(n) for c, n in zip(*np.unique(label_labels, return_counts=True))} == expected

    # The map tells the same story as the files.
    content = json.load(open(result['paths']['map']))
    assert content['label'] == label_ids.tolist() and content['unlabel'] == unlabel_ids.tolist()
    assert content['valid_candidates'] == unlabel_ids.tolist()
    assert content['max_valid'] == len(labels) - 50 and content['seed'] == 1
    assert content['inputs'] == [{'path': path, 'count': len(labels), 'first_id': 0}]
    assert content['label_counts'] == {str(c): n for c, n in expected.items()}

    # Metadata carries the input's facts.
    meta = records.read_meta(result['paths']['unlabel'])
    assert meta['count'] == len(labels) - 50 and meta['nclass'] == 10
    assert meta['class_names'] == NAMES
    assert (meta['height'], meta['width'], meta['channels']) == SHAPE


def test_unlabeled_file_starts_class_interleaved(ml_data, cifar_like):
    path, labels = cifar_like
    result = split(ml_data, inputs=[path], seed=2, size=20)
    _, unlabel_labels = read_output(result['paths']['unlabel'])
    # Round-robin over classes: each block of 10 holds one image of every class, in class order,
    # for as long as the smallest class lasts; then the classes left, still in turn.
    heldout = np.bincount(labels, minlength=10) - np.array(
        [result['map']['label_counts'][str(c)] for c in range(10)])
    blocks = int(heldout.min())
    assert blocks >= 2
    assert unlabel_labels[:10 * blocks].tolist() == list(range(10)) * blocks
    still = [c for c in range(10) if heldout[c] > blocks]
    assert unlabel_labels[10 * blocks:10 * blocks + len(still)].tolist() == still


def test_class_balance(ml_data, cifar_like):
    path, _ = cifar_like
    result = split(ml_data, inputs=[path], seed=1, size=50, class_balance=True)
    _, label_labels = read_output(result['paths']['label'])
    assert np.bincount(label_labels, minlength=10).tolist() == [5] * 10


def test_seed_zero_takes_the_first_images_of_each_class(ml_data, cifar_like):
    path, labels = cifar_like
    result = split(ml_data, inputs=[path], seed=0, size=50)
    label_ids, _ = read_output(result['paths']['label'])
    unlabel_ids, _ = read_output(result['paths']['unlabel'])
    quota = result['map']['label_counts']
    for c in range(10):
        ids = np.flatnonzero(labels == c)
        assert sorted(i for i in label_ids if labels[i] == c) == ids[:quota[str(c)]].tolist()
        # held-out images of a class come in file order too
        assert [i for i in unlabel_ids if labels[i] == c] == ids[quota[str(c)]:].tolist()


def test_seeds_are_reproducible_and_differ(ml_data, cifar_like):
    path, _ = cifar_like
    one = split(ml_data, inputs=[path], seed=1, size=50)['map']
    two = split(ml_data, inputs=[path], seed=2, size=50)['map']
    again = split(ml_data, inputs=[path], seed=1, size=50, overwrite=True)['map']
    assert one['label'] != two['label'] and one['unlabel'] != two['unlabel']
    assert one['label'] == again['label'] and one['unlabel'] == again['unlabel']


def test_small_reorder_buffer_gives_the_same_files(ml_data, cifar_like):
    """The bounded-memory path (many windows of the spill file) writes exactly the same order."""
    path, _ = cifar_like
    big = split(ml_data, inputs=[path], seed=4, size=30)
    small = split(ml_data, name='small', inputs=[path], seed=4, size=30, buffer_mb=0.002)
    for part in ('label', 'unlabel'):
        assert (read_output(big['paths'][part])[0] == read_output(small['paths'][part])[0]).all()
    assert not [f for f in os.listdir(ml_data / 'SSL') if f.startswith('.')]  # no spill left


def test_several_inputs_are_concatenated(ml_data):
    first = write_input(ml_data / 'a-train.tfrecord', np.arange(40) % 10)
    second = write_input(ml_data / 'b-train.tfrecord', np.arange(30) % 10, first_id=40)
    result = split(ml_data, name='ab', inputs=[first, second], seed=1, size=20)
    ids = np.concatenate([read_output(result['paths'][p])[0] for p in ('label', 'unlabel')])
    assert sorted(ids.tolist()) == list(range(70))
    assert result['map']['label'] + result['map']['unlabel'] != []
    # record ids are positions in the concatenation, which is how the content ids were made
    assert sorted(result['map']['label'] + result['map']['unlabel']) == list(range(70))
    assert [i['first_id'] for i in result['map']['inputs']] == [0, 40]


def test_custom_heldout_labeled_images_come_first(ml_data):
    # 70 labeled training images, of which --label_size=60 form the pool; 25 unlabeled images
    # in mydataset-unlabeled.tfrecord beside it, picked up automatically.
    train_labels = np.arange(70) % 3
    train = write_input(ml_data / 'mydataset-train.tfrecord', train_labels, class_names=['a', 'b', 'c'])
    write_input(ml_data / 'mydataset-unlabeled.tfrecord', [-1] * 25, first_id=70,
                class_names=['a', 'b', 'c'])
    result = split(ml_data, name='mydataset', inputs=[train], seed=1, size=45, label_size=60)
    label_ids, _ = read_output(result['paths']['label'])
    unlabel_ids, unlabel_labels = read_output(result['paths']['unlabel'])

    assert len(label_ids) == 45 and set(label_ids) <= set(range(60))
    # mydataset.1@45-15 validates on exactly the 15 held-out images of the pool ...
    valid = unlabel_ids[:15]
    assert sorted(valid.tolist()) == sorted(set(range(60)) - set(label_ids.tolist()))
    assert unlabel_labels[:15].tolist() == [0, 1, 2] * 5  # class-interleaved
    # ... then come the labeled images outside the pool and the unlabeled images, never earlier.
    assert unlabel_ids[15:].tolist() == list(range(60, 95))
    assert (unlabel_labels[25:] == -1).all() and -1 not in unlabel_labels[:15]
    assert sorted(np.concatenate([label_ids, unlabel_ids]).tolist()) == list(range(95))
    assert result['map']['max_valid'] == 15
    assert result['map']['valid_candidates'] == valid.tolist()
    assert result['map']['inputs'][1] == {
        'path': str(ml_data / 'mydataset-unlabeled.tfrecord'), 'count': 25, 'first_id': 70}


def test_interrupted_split_leaves_nothing(ml_data, cifar_like, monkeypatch):
    path, _ = cifar_like
    real = cs.copy_in_order
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cs, 'copy_in_order', failing)
    with pytest.raises(KeyboardInterrupt):
        split(ml_data, inputs=[path], seed=1, size=50)
    assert os.listdir(ml_data / 'SSL') == []


# ----------------------------------------------------------------------------------------------
# Bad input (in-process: the message; the CLI's one-line form is checked below).

@pytest.mark.parametrize('kwargs, words', [
    (dict(size=301), ['--label_split_size=301', 'larger', '300']),
    (dict(size=9), ['--label_split_size=9', 'number of classes', '10']),
    (dict(size=50, label_size=301), ['--label_size=301', 'larger than the input']),
    (dict(size=50, label_size=40), ['--label_split_size=50', '--label_size=40']),
    (dict(size=50, name='cifar-10'), ['OUTPUT_PREFIX', "'cifar-10'"]),
    (dict(size=50, name='cifar10.1'), ['OUTPUT_PREFIX', "'cifar10.1'"]),
])
def test_bad_requests(ml_data, cifar_like, kwargs, words):
    path, _ = cifar_like
    with pytest.raises(UserError) as e:
        split(ml_data, inputs=[path], seed=1, **kwargs)
    for word in words:
        assert word in str(e.value)
    assert not os.path.exists(ml_data / 'SSL') or os.listdir(ml_data / 'SSL') == []


def test_unlabeled_record_inside_label_size_is_refused(ml_data):
    labels = np.r_[np.arange(20) % 2, [-1] * 5]
    path = write_input(ml_data / 'x-train.tfrecord', labels, class_names=['a', 'b'])
    with pytest.raises(UserError, match='record 20 of the first 22 has no label'):
        split(ml_data, name='x', inputs=[path], size=10, label_size=22)


def test_missing_input_says_how_to_create_it(ml_data):
    with pytest.raises(UserError, match=r'cifar10-train.tfrecord does not exist; .*create_datasets.py cifar10'):
        split(ml_data, inputs=[str(ml_data / 'cifar10-train.tfrecord')])
    with pytest.raises(UserError, match=r'create_datasets.py custom --name mine'):
        split(ml_data, name='mine', inputs=[str(ml_data / 'mine-train.tfrecord')])


def test_existing_split_is_kept_unless_overwrite(ml_data, cifar_like):
    path, _ = cifar_like
    first = split(ml_data, inputs=[path], seed=1, size=50)
    before = open(first['paths']['label'], 'rb').read()
    with pytest.raises(UserError, match=r'cifar10.1@50 exists.*--overwrite'):
        split(ml_data, inputs=[path], seed=1, size=50, class_balance=True)
    assert open(first['paths']['label'], 'rb').read() == before
    split(ml_data, inputs=[path], seed=1, size=50, class_balance=True, overwrite=True)
    assert open(first['paths']['label'], 'rb').read() != before


# ----------------------------------------------------------------------------------------------
# The command line, as the README runs it.

def readme_shell(command, ml_data):
    """Runs a README line through the shell ($ML_DATA expanded there), scripts run directly."""
    env = dict(os.environ, ML_DATA=str(ml_data), TF_CPP_MIN_LOG_LEVEL='2',
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''))
    return subprocess.run(command, shell=True, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def test_readme_cifar10_invocation(ml_data):
    labels = np.arange(300) % 10
    write_input(ml_data / 'cifar10-train.tfrecord', labels)
    seed, size = 3, 250
    result = assert_ok(readme_shell(
        f'CUDA_VISIBLE_DEVICES= scripts/create_split.py --seed={seed} --label_split_size={size} '
        '$ML_DATA/SSL/cifar10 $ML_DATA/cifar10-train.tfrecord', ml_data))
    for part in ('label.tfrecord', 'unlabel.tfrecord', 'map.json'):
        assert (ml_data / 'SSL' / f'cifar10.3@250-{part}').exists()
        assert f'cifar10.3@250-{part}' in result.stdout
    assert records.read_meta(str(ml_data / 'SSL' / 'cifar10.3@250-label.tfrecord'))['count'] == 250


def test_readme_custom_invocation(ml_data):
    write_input(ml_data / 'mydataset-train.tfrecord', np.arange(500) % 5, class_names=list('abcde'))
    write_input(ml_data / 'mydataset-unlabeled.tfrecord', [-1] * 30, first_id=500,
                class_names=list('abcde'))
    assert_ok(readme_shell(
        'CUDA_VISIBLE_DEVICES= scripts/create_split.py --seed=1 --label_split_size=450 '
        '--label_size=500 $ML_DATA/SSL/mydataset $ML_DATA/mydataset-train.tfrecord', ml_data))
    _, labels = read_output(ml_data / 'SSL' / 'mydataset.1@450-unlabel.tfrecord')
    assert len(labels) == 80 and (labels[:50] >= 0).all() and (labels[50:] == -1).all()
    # The README's alias and the original's --custom are accepted (here refused as a re-run).
    result = run_script(SCRIPT, '--seed=1', '--labeled_split_size=450', '--custom',
                        '--label_size=500', ml_data / 'SSL' / 'mydataset',
                        ml_data / 'mydataset-train.tfrecord')
    assert_user_error(result, 'mydataset.1@450 exists', '--overwrite')


@pytest.mark.parametrize('args, words', [
    (['--label_split_size=10', 'SSL/cifar10', 'cifar10-train.tfrecord'],
     ['cifar10-train.tfrecord does not exist', 'scripts/create_datasets.py cifar10']),
    (['--label_split_size=10', 'SSL/my-data', 'cifar10-train.tfrecord'], ['OUTPUT_PREFIX', 'my-data']),
    (['SSL/cifar10', 'cifar10-train.tfrecord'], ['--label_split_size is required']),
    (['--label_split_size=10', 'SSL/cifar10'], ['INPUT.tfrecord']),
])
def test_cli_errors_are_one_line(ml_data, args, words):
    args = [a if a.startswith('--') else ml_data / a for a in args]
    assert_user_error(run_script(SCRIPT, *args), *words)

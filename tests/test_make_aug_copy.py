"""scripts/make_aug_copy.py on tiny splits: layout, order, sources, no validation leak, errors."""
import json
import os

import numpy as np
import tensorflow as tf

from conftest import assert_ok, assert_user_error, run_script
from libml import names, records

SCRIPT = 'scripts/make_aug_copy.py'


def colours(n, channels):
    """n distinct pixel values: image i is filled with colours[i]."""
    if channels == 1:
        values = [[5 + 6 * i] for i in range(n)]
    else:
        values = [[(53 * i + 17) % 256, (97 * i + 31) % 256, (29 * i + 7) % 256] for i in range(n)]
    assert len({tuple(v) for v in values}) == n
    return np.array(values, np.uint8)


def make_images(n, shape):
    """Constant-colour images with a white top row (so shifts and flips show); the median pixel
    stays the image's own colour under shift, mirror and cutout (noise covers <= 40%)."""
    images = np.broadcast_to(colours(n, shape[2])[:, None, None, :], (n,) + shape).copy()
    images[:, 0, : shape[1] // 2] = 255
    return images


def identify(png, palette):
    """Index of the original an image derives from: its median pixel is that image's colour."""
    image = tf.io.decode_png(png).numpy()
    median = np.median(image.reshape(-1, image.shape[-1]), axis=0)
    matches = np.nonzero(np.all(palette == median, axis=1))[0]
    assert len(matches) == 1, f'median {median} is no original colour'
    return int(matches[0])


def write_split(root, stem, shape, n_unlabel, n_label=10, nclass=10, label_stem=None):
    """A split like create_split.py writes (no `source` feature); returns the unlabeled images.

    label_stem: write the label file under this split's name instead (as README 2.3 does for
    cifar6_mismatch50.1@250, whose label file is cifar6.1@250's)."""
    images = make_images(n_unlabel + n_label, shape)
    pngs = records.encode_png(images)
    label_path = names.split_path(label_stem or stem, 'label', root)
    with records.RecordWriter(label_path, shape, nclass=nclass) as w:
        for i in range(n_label):
            w.write(pngs[n_unlabel + i], i % nclass)
    with records.RecordWriter(names.split_path(stem, 'unlabel', root), shape, nclass=nclass) as w:
        for i in range(n_unlabel):
            w.write(pngs[i], (3 * i) % nclass)
    return images[:n_unlabel]


def read(path):
    batches = list(records.read_records(path))
    return {k: np.concatenate([b[k] for b in batches]) for k in ('image', 'label', 'source')}


def meta(path):
    with open(names.meta_path(path)) as f:
        return json.load(f)


def test_readme_command(ml_data):
    n = 30
    write_split(ml_data, 'cifar10.1@250', (16, 16, 3), n)
    palette = colours(n, 3)
    test_file = names.record_path('cifar10', 'test', ml_data)
    with records.RecordWriter(test_file, (16, 16, 3), nclass=10) as w:
        w.write(records.encode_png(make_images(1, (16, 16, 3)))[0], 0)

    result = assert_ok(run_script(SCRIPT, '--aug_dataset=cifar10.1@250', f'--unlabel_size={n}',
                                  '--aug_copy=2', '--augment=cutout'))
    assert 'nothing to copy' in result.stdout and 'cifar10-test.tfrecord' in result.stdout
    assert sorted(os.listdir(ml_data / 'SSL')) == sorted(
        f'{stem}-{part}.tfrecord{ext}' for stem in ('cifar10.1@250', 'cifar10_aug2.1@250')
        for part in ('label', 'unlabel') for ext in ('', '.json'))  # nothing partial left

    # The label file: the same bytes, the same metadata.
    old_label = names.split_path('cifar10.1@250', 'label', ml_data)
    new_label = names.split_path('cifar10_aug2.1@250', 'label', ml_data)
    with open(old_label, 'rb') as a, open(new_label, 'rb') as b:
        assert a.read() == b.read()
    assert meta(new_label) == meta(old_label)

    # The unlabeled file: originals first (same bytes, source = index), then copy 1, copy 2.
    old = read(names.split_path('cifar10.1@250', 'unlabel', ml_data))
    path = names.split_path('cifar10_aug2.1@250', 'unlabel', ml_data)
    new = read(path)
    assert len(new['image']) == n * 3
    m = meta(path)
    assert (m['count'], m['nclass']) == (3 * n, 10)
    assert (m['height'], m['width'], m['channels']) == (16, 16, 3)
    assert list(new['image'][:n]) == list(old['image'])
    np.testing.assert_array_equal(new['source'], np.tile(np.arange(n), 3))
    np.testing.assert_array_equal(new['label'], np.tile(old['label'], 3))
    sources = [identify(png, palette) for png in new['image']]
    np.testing.assert_array_equal(sources, new['source'])  # every copy shows its own original

    originals = [tf.io.decode_png(p).numpy() for p in old['image']]
    changed = 0
    for png, source in zip(new['image'][n:], new['source'][n:]):
        diff = np.any(tf.io.decode_png(png).numpy() != originals[source], axis=-1)
        assert diff.mean() <= 0.4
        changed += diff.any()
    assert 0 < changed < 2 * n  # cutout hits about 30% of the copies

    # The trainer's rule for NAME_aug2.1@250-VALID: validate on the first VALID records, train on
    # the others whose source >= VALID. No validation image, augmented or not, is trained on.
    for valid in (1, 7, 20):
        np.testing.assert_array_equal(new['image'][:valid], old['image'][:valid])
        train = [png for png, s in zip(new['image'][valid:], new['source'][valid:]) if s >= valid]
        assert len(train) == 3 * (n - valid)
        assert min(identify(png, palette) for png in train) >= valid

    # A complete dataset is not replaced without --overwrite.
    assert_user_error(run_script(SCRIPT, '--aug_dataset=cifar10.1@250', '--aug_copy=2'),
                      'cifar10_aug2.1@250', '--overwrite')


def test_custom_grey_mismatch_valid_rerun(ml_data):
    # A custom grey 8x8 dataset, derived like README 2.3's cifar6_mismatch50: its split has an
    # unlabeled file of its own and the label file of the split it derives from.
    n, shape = 24, (8, 8, 1)
    write_split(ml_data, 'mydata_mismatch25.3@20', shape, n, nclass=4, label_stem='mydata.3@20')
    palette = colours(n, 1)
    args = (SCRIPT, '--aug_dataset=mydata_mismatch25.3@20', '--aug_copy=3', '--augment=svhn',
            '--valid=4', '--seed=7')
    result = assert_ok(run_script(*args))
    assert 'mydata-test.tfrecord' in result.stdout  # where the trainer will look
    stem = 'mydata_mismatch25_aug3.3@20'
    with open(names.split_path('mydata.3@20', 'label', ml_data), 'rb') as a, \
            open(names.split_path(stem, 'label', ml_data), 'rb') as b:
        assert a.read() == b.read()
    path = names.split_path(stem, 'unlabel', ml_data)
    new = read(path)
    assert len(new['image']) == n + 3 * (n - 4)
    assert meta(path)['channels'] == 1 and meta(path)['nclass'] == 4
    np.testing.assert_array_equal(new['source'], list(range(n)) + list(range(4, n)) * 3)
    np.testing.assert_array_equal([identify(p, palette) for p in new['image']], new['source'])
    shifted = sum(not np.array_equal(tf.io.decode_png(p).numpy(), tf.io.decode_png(
        new['image'][s]).numpy()) for p, s in zip(new['image'][n:], new['source'][n:]))
    assert shifted > 30
    with open(path, 'rb') as f:
        first = f.read()

    # Interrupted between the two outputs (label file missing), with a partial file of a killed
    # run: running the same command again remakes the dataset, identical (seeded), and cleans up.
    os.remove(names.split_path(stem, 'label', ml_data))
    stale = ml_data / 'SSL' / f'.{stem}-unlabel.tfrecord.partial-999999999'
    stale.write_bytes(b'partial')
    assert_ok(run_script(*args))
    assert not stale.exists()
    with open(path, 'rb') as f:
        assert f.read() == first
    assert os.path.exists(names.split_path(stem, 'label', ml_data))


def test_damaged_unlabel_file(ml_data):
    write_split(ml_data, 'cifar10.1@250', (8, 8, 3), 12)
    path = names.split_path('cifar10.1@250', 'unlabel', ml_data)
    with open(path, 'r+b') as f:
        f.seek(40)
        f.write(b'garbage' * 10)
    assert_user_error(run_script(SCRIPT, '--aug_dataset=cifar10.1@250', '--aug_copy=2'),
                      'cifar10.1@250-unlabel.tfrecord', 'create the split again')
    assert not os.path.exists(names.split_path('cifar10_aug2.1@250', 'unlabel', ml_data))
    assert not [f for f in os.listdir(ml_data / 'SSL') if f.startswith('.')]


def test_bad_flags(ml_data):
    write_split(ml_data, 'cifar10.1@250', (8, 8, 3), 12)
    write_split(ml_data, 'other.1@250', (8, 8, 3), 12, label_stem='elsewhere.1@250')
    cases = [
        ((), ['--aug_dataset', 'required']),
        (('--aug_dataset=cifar10',), ['cifar10', 'NAME.SEED@SIZE']),
        (('--aug_dataset=cifar-10.1@250',), ['NAME.SEED@SIZE']),
        (('--aug_dataset=cifar10.2@250',), ['cifar10.2@250-unlabel.tfrecord', 'create_split.py',
                                            '--seed=2', '--label_split_size=250']),
        (('--aug_dataset=other.1@250',), ['other.1@250-label.tfrecord']),
        (('--aug_dataset=cifar10.1@250', '--aug_copy=0'), ['--aug_copy=0']),
        (('--aug_dataset=cifar10.1@250', '--augment=autoaugment'), ['autoaugment', 'cutout']),
        (('--aug_dataset=cifar10.1@250', '--unlabel_size=49750'), ['49750', '12']),
        (('--aug_dataset=cifar10.1@250', '--valid=12'), ['--valid=12', '12']),
        (('--aug_dataset=cifar10.1@250', 'extra'), ['unexpected', 'extra']),
    ]
    for args, words in cases:
        assert_user_error(run_script(SCRIPT, *args), *words)
    assert sorted(os.listdir(ml_data / 'SSL')) == sorted(  # nothing written
        f'{stem}-{part}.tfrecord{ext}' for stem, part in (
            ('cifar10.1@250', 'label'), ('cifar10.1@250', 'unlabel'), ('other.1@250', 'unlabel'),
            ('elsewhere.1@250', 'label')) for ext in ('', '.json'))


def test_help():
    result = run_script(SCRIPT, '--help')  # absl exits 1 after printing the help
    assert 'Traceback' not in result.stderr
    for flag in ('--aug_dataset', '--aug_copy', '--augment', '--unlabel_size', '--valid', '--seed',
                 '--overwrite'):
        assert flag in result.stdout

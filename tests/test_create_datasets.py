"""scripts/create_datasets.py: archives in their published layouts give back exactly their pixels
and labels; digits; custom folders with real-world mess; downloads; and the user's mistakes."""
import hashlib
import io
import json
import os
import pickle
import struct
import tarfile
import time

import numpy as np
import pytest
import scipy.io
from PIL import Image

from conftest import REPO, assert_ok, assert_user_error, run_script
import libml  # noqa: F401,I100  (before TensorFlow)
import tensorflow as tf
from libml import records
from libml.sources import archives, cifar, custom, digits, download, output, stl10, svhn
from libml.utils import UserError

SCRIPT = os.path.join(REPO, 'scripts', 'create_datasets.py')


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Tests never download: every canonical URL points to a missing local file."""
    for filename, source in download.ARCHIVES.items():
        offline = download.Archive((tmp_path / 'offline' / filename).as_uri(), source.md5)
        monkeypatch.setitem(download.ARCHIVES, filename, offline)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 2 images, so the tiny archives below still go through several chunks."""
    monkeypatch.setattr(output, 'CHUNK', 2)


def read_back(path):
    """(images [N, H, W, C], labels [N]) decoded from a record file."""
    images, labels = [], []
    for batch in records.read_records(str(path)):
        for png in batch['image']:
            pixels = np.asarray(Image.open(io.BytesIO(png)))
            images.append(pixels[..., None] if pixels.ndim == 2 else pixels)
        labels += batch['label'].tolist()
    return np.stack(images), np.array(labels)


def random_images(rng, n, side, channels=3):
    return rng.integers(0, 256, (n, side, side, channels), dtype=np.uint8)


def write_tar(path, members):
    """A .tar.gz holding `members` {name: bytes} in the given order."""
    with tarfile.open(path, 'w:gz') as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


# ----------------------------------------------------------------------------------------------
# CIFAR: Python 2 pickles, written as CIFAR's are (strings as Python 2 str, numpy.core paths).

class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 `str` (BINSTRING opcodes), like the CIFAR files."""
    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        raw = obj.encode('latin1') if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack('<i', len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def py2_pickle(obj):
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    # Pickled by numpy 1.x, as the published files were.
    return buf.getvalue().replace(b'cnumpy._core.multiarray\n', b'cnumpy.core.multiarray\n')


def cifar_rows(images):
    """The published row layout: 1024 red values (row-major), then 1024 green, then 1024 blue."""
    return np.stack([np.concatenate([im[:, :, c].ravel() for c in range(3)]) for im in images])


def cifar_batch(images, labels, label_keys):
    batch = {'batch_label': 'a batch', 'data': cifar_rows(images),
             'filenames': [f'img_{i}.png' for i in range(len(images))]}
    for key in label_keys:
        batch[key] = [int(x) for x in labels]
    return py2_pickle(batch)


CIFAR10_NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
                 'truck']


def make_cifar10(path, rng, per_batch=3, test=5, batch1=None):
    train = [(random_images(rng, per_batch, 32), rng.integers(0, 10, per_batch)) for _ in range(5)]
    test = (random_images(rng, test, 32), rng.integers(0, 10, test))
    members = {f'cifar-10-batches-py/data_batch_{i + 1}': cifar_batch(*b, ['labels'])
               for i, b in enumerate(train)}
    if batch1 is not None:
        members['cifar-10-batches-py/data_batch_1'] = batch1
    members['cifar-10-batches-py/readme.html'] = b'<html></html>'
    members['cifar-10-batches-py/test_batch'] = cifar_batch(*test, ['labels'])
    members['cifar-10-batches-py/batches.meta'] = py2_pickle(
        {'num_cases_per_batch': 10000, 'label_names': CIFAR10_NAMES, 'num_vis': 3072})
    write_tar(path, members)
    return (np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train])), test


def check_records(path, images, labels, class_names):
    got_images, got_labels = read_back(path)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    meta = records.read_meta(str(path))
    assert meta['count'] == len(labels)
    assert (meta['height'], meta['width'], meta['channels']) == images.shape[1:]
    assert meta['class_names'] == class_names


def check_mapping(root, name, class_names):
    mapping = json.loads((root / f'{name}_class_mappings.json').read_text(encoding='utf-8'))
    assert mapping == {str(i): c for i, c in enumerate(class_names)}


def test_cifar10_exact_pixels_labels_and_names(ml_data, tmp_path, small_chunks):
    rng = np.random.default_rng(0)
    archives = tmp_path / 'archives'
    archives.mkdir()
    train, test = make_cifar10(archives / 'cifar-10-python.tar.gz', rng)
    lines = cifar.create_cifar10(str(ml_data), str(archives))
    check_records(ml_data / 'cifar10-train.tfrecord', *train, CIFAR10_NAMES)
    check_records(ml_data / 'cifar10-test.tfrecord', *test, CIFAR10_NAMES)
    check_mapping(ml_data, 'cifar10', CIFAR10_NAMES)
    assert f'wrote {ml_data / "cifar10-train.tfrecord"}: 15 records' in lines
    assert os.listdir(archives) == ['cifar-10-python.tar.gz']  # read in place, nothing extracted


def test_cifar100_fine_labels_and_meta_order(ml_data, tmp_path):
    rng = np.random.default_rng(1)
    names = [f'class_{i:03d}' for i in rng.permutation(100)]  # meta order, not sorted
    train = random_images(rng, 6, 32), rng.integers(0, 100, 6)
    test = random_images(rng, 4, 32), rng.integers(0, 100, 4)
    write_tar(tmp_path / 'cifar-100-python.tar.gz', {
        'cifar-100-python/train': cifar_batch(*train, ['fine_labels', 'coarse_labels']),
        'cifar-100-python/test': cifar_batch(*test, ['fine_labels', 'coarse_labels']),
        'cifar-100-python/meta': py2_pickle({'fine_label_names': names,
                                             'coarse_label_names': [f'c{i}' for i in range(20)]})})
    # Coarse labels differ from fine ones: they must not be the ones written.
    cifar.create_cifar100(str(ml_data), str(tmp_path))
    check_records(ml_data / 'cifar100-train.tfrecord', *train, names)
    check_records(ml_data / 'cifar100-test.tfrecord', *test, names)
    check_mapping(ml_data, 'cifar100', names)


class Evil:
    """A pickle that, unpickled by the general unpickler, creates a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, 'w')


def test_cifar_pickles_cannot_run_code(ml_data, tmp_path):
    marker = str(tmp_path / 'pwned')
    evil = pickle.dumps({'data': Evil(marker), 'labels': [0]}, protocol=2)
    make_cifar10(tmp_path / 'cifar-10-python.tar.gz', np.random.default_rng(2), batch1=evil)
    with pytest.raises(UserError, match=r'tar\.gz is damaged.*refusing to load io\.open'):
        cifar.create_cifar10(str(ml_data), str(tmp_path))
    assert not os.path.exists(marker)
    assert not (ml_data / 'cifar10-train.tfrecord').exists()


def test_restricted_unpickler_reads_modern_numpy_pickles():
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for protocol in (2, 3, 5):
        raw = pickle.dumps({b'data': array, b'labels': [1, 2, 3]}, protocol)
        loaded = archives.load_pickle(raw)
        np.testing.assert_array_equal(loaded['data'], array)
        assert loaded['labels'] == [1, 2, 3]
    # Python 3 pickles bytes at protocol 2 as _codecs.encode(text, 'latin1'); nothing else passes.
    rot13 = b'\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.'
    with pytest.raises(pickle.UnpicklingError, match='rot13'):
        archives.load_pickle(rot13)


def test_damaged_or_foreign_archives_are_one_line_errors(ml_data, tmp_path):
    path = tmp_path / 'cifar-10-python.tar.gz'
    make_cifar10(path, np.random.default_rng(3))
    path.write_bytes(path.read_bytes()[:4000])  # truncated download
    with pytest.raises(UserError, match=r'cifar-10-python\.tar\.gz is damaged.*delete it'):
        cifar.create_cifar10(str(ml_data), str(tmp_path))
    write_tar(path, {'cifar-10-batches-py/readme.html': b'x'})
    with pytest.raises(UserError, match=r'lacks cifar-10-batches-py/batches\.meta'):
        cifar.create_cifar10(str(ml_data), str(tmp_path))
    make_svhn(tmp_path, np.random.default_rng(3), {'train': 2, 'test': 2, 'extra': 2})
    (tmp_path / 'train_32x32.mat').write_bytes(b'not a mat file')
    with pytest.raises(UserError, match=r'train_32x32\.mat is damaged'):
        svhn.create_svhn(str(ml_data), str(tmp_path))
    assert sorted(os.listdir(ml_data)) == []


# ----------------------------------------------------------------------------------------------
# SVHN: MATLAB files, X is 32x32x3xN, y holds 1..10 with 10 for the digit 0.

def make_svhn(folder, rng, counts, compress=True, y_dtype=np.uint8):
    parts = {}
    for part, n in counts.items():
        images = random_images(rng, n, 32)
        digits = rng.integers(0, 10, n)
        digits[:2] = [0, 9]
        y = np.where(digits == 0, 10, digits).astype(y_dtype).reshape(n, 1)
        scipy.io.savemat(folder / f'{part}_32x32.mat', {'X': images.transpose(1, 2, 3, 0), 'y': y},
                         do_compression=compress)
        parts[part] = images, digits
    return parts


@pytest.mark.parametrize('compress, y_dtype', [(True, np.uint8), (False, np.float64)])
def test_svhn_exact_pixels_and_digit_labels(ml_data, tmp_path, small_chunks, compress, y_dtype):
    rng = np.random.default_rng(4)
    parts = make_svhn(tmp_path, rng, {'train': 5, 'test': 3, 'extra': 4}, compress, y_dtype)
    svhn.create_svhn(str(ml_data), str(tmp_path))
    names = [str(d) for d in range(10)]
    for part, (images, numbers) in parts.items():
        check_records(ml_data / f'svhn-{part}.tfrecord', images, numbers, names)
    check_mapping(ml_data, 'svhn', names)


# ----------------------------------------------------------------------------------------------
# STL-10: raw binaries in stl10_binary/, each image 3 planes stored column by column.

def stl_bytes(images):
    return b''.join(np.concatenate([im[:, :, c].flatten(order='F') for c in range(3)]).tobytes()
                    for im in images)


STL_NAMES = ['airplane', 'bird', 'car', 'cat', 'deer', 'dog', 'horse', 'monkey', 'ship', 'truck']


def test_stl10_exact_pixels_labels_unlabeled_and_folds(ml_data, tmp_path, small_chunks):
    rng = np.random.default_rng(5)
    train = random_images(rng, 4, 96), rng.integers(0, 10, 4)
    test = random_images(rng, 3, 96), rng.integers(0, 10, 3)
    unlabeled = random_images(rng, 5, 96)
    # unlabeled_X.bin before test_X.bin: it is read after the others, going back in the archive.
    write_tar(tmp_path / 'stl10_binary.tar.gz', {
        'stl10_binary/train_X.bin': stl_bytes(train[0]),
        'stl10_binary/train_y.bin': (train[1] + 1).astype(np.uint8).tobytes(),
        'stl10_binary/unlabeled_X.bin': stl_bytes(unlabeled),
        'stl10_binary/test_X.bin': stl_bytes(test[0]),
        'stl10_binary/test_y.bin': (test[1] + 1).astype(np.uint8).tobytes(),
        'stl10_binary/class_names.txt': ('\n'.join(STL_NAMES) + '\n').encode(),
        'stl10_binary/fold_indices.txt': b'0 2 \n1 3 \n'})
    lines = stl10.create_stl10(str(ml_data), str(tmp_path))
    check_records(ml_data / 'stl10-train.tfrecord', *train, STL_NAMES)
    check_records(ml_data / 'stl10-test.tfrecord', *test, STL_NAMES)
    check_records(ml_data / 'stl10-unlabeled.tfrecord', unlabeled, [-1] * 5, STL_NAMES)
    assert json.loads((ml_data / 'stl10_folds.json').read_text()) == [[0, 2], [1, 3]]
    check_mapping(ml_data, 'stl10', STL_NAMES)
    assert f'wrote {ml_data / "stl10-unlabeled.tfrecord"}: 5 records' in lines


# ----------------------------------------------------------------------------------------------
# Downloads (no network: file:// URLs).

@pytest.fixture
def cifar10_source(tmp_path, monkeypatch):
    """A CIFAR-10 archive served from a file:// URL, with its true MD5 in the checksum table."""
    source = tmp_path / 'server' / 'cifar-10-python.tar.gz'
    source.parent.mkdir()
    train, _ = make_cifar10(source, np.random.default_rng(6))
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    monkeypatch.setitem(download.ARCHIVES, 'cifar-10-python.tar.gz',
                        download.Archive(source.as_uri(), md5))
    return source, train


def test_download_checks_md5_then_builds(ml_data, tmp_path, cifar10_source):
    source, train = cifar10_source
    downloads = tmp_path / 'downloads'
    cifar.create_cifar10(str(ml_data), str(downloads))
    assert os.listdir(downloads) == ['cifar-10-python.tar.gz']
    assert (downloads / 'cifar-10-python.tar.gz').read_bytes() == source.read_bytes()
    check_records(ml_data / 'cifar10-train.tfrecord', *train, CIFAR10_NAMES)


def test_download_with_wrong_md5_keeps_nothing(ml_data, tmp_path, cifar10_source, monkeypatch):
    source, _ = cifar10_source
    wrong = download.Archive(source.as_uri(), '0' * 32)
    monkeypatch.setitem(download.ARCHIVES, 'cifar-10-python.tar.gz', wrong)
    downloads = tmp_path / 'downloads'
    with pytest.raises(UserError, match=r'arrived damaged \(MD5 [0-9a-f]{32}, expected 0{32}\)'):
        cifar.create_cifar10(str(ml_data), str(downloads))
    assert os.listdir(downloads) == []
    assert os.listdir(ml_data) == []


def test_download_failure_says_what_to_do(ml_data, tmp_path, monkeypatch):
    missing = (tmp_path / 'nowhere.tar.gz').as_uri()
    monkeypatch.setitem(download.ARCHIVES, 'cifar-10-python.tar.gz',
                        download.Archive(missing, '0' * 32))
    with pytest.raises(UserError, match=r'cannot download file://.*nowhere\.tar\.gz.*by hand to '):
        cifar.create_cifar10(str(ml_data), str(tmp_path / 'downloads'))


# ----------------------------------------------------------------------------------------------
# digits.

def test_digits_split_counts_balance_and_pixels(ml_data):
    from sklearn.datasets import load_digits

    shipped = load_digits()
    digits.create_digits(str(ml_data))
    train_images, train_labels = read_back(ml_data / 'digits-train.tfrecord')
    test_images, test_labels = read_back(ml_data / 'digits-test.tfrecord')
    assert train_images.shape == (1297, 8, 8, 1) and test_images.shape == (500, 8, 8, 1)
    shares = 500 * np.bincount(shipped.target) / 1797
    assert np.all(np.abs(np.bincount(test_labels, minlength=10) - shares) < 1)
    # The documented scaling, round(v * 255 / 16), and no image lost or repeated.
    expected = np.floor(shipped.images * 255 / 16 + 0.5).astype(np.uint8)[..., None]
    assert expected[shipped.images == 8].max() == 128 and expected.max() == 255
    mask = digits.digits_test_mask(shipped.target)
    np.testing.assert_array_equal(test_images, expected[mask])
    np.testing.assert_array_equal(train_images, expected[~mask])
    np.testing.assert_array_equal(test_labels, shipped.target[mask])
    # The split is fixed: its first test images are documented behaviour, not an accident.
    assert np.flatnonzero(mask)[:8].tolist() == FIRST_DIGITS_TEST
    check_mapping(ml_data, 'digits', [str(d) for d in range(10)])


FIRST_DIGITS_TEST = [1, 2, 4, 5, 6, 9, 14, 17]


# ----------------------------------------------------------------------------------------------
# custom: folders of images as users have them.

def save(path, pixels, mode=None, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels, mode)
    fmt = 'JPEG' if path.suffix.lower() in ('.jpg', '.jpeg') else 'PNG'
    image.save(path, fmt, **kwargs)
    return path


def rgb(rng, h=5, w=6):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def messy_dataset(root, rng):
    """Train/test/unlabeled folders with mixed formats, names and junk; returns the expected
    (label, pixels) of every train record and the unlabeled pixels."""
    train, expected = root / 'train', []

    def add(path, pixels, label, mode=None, expect=None, **kw):
        save(path, pixels, mode, **kw)
        expected.append((label, expect if expect is not None else pixels))

    classes = ['bird', 'cat', 'dog', 'élan vital']  # sorted; one with a space and non-ASCII
    add(train / 'cat' / 'a.png', rgb(rng), 1)
    rgba = np.concatenate([rgb(rng), np.full((5, 6, 1), 255, np.uint8)], axis=2)
    rgba[0, :, 3] = 0  # a transparent row: composited onto white
    white_row = rgba[..., :3].copy()
    white_row[0] = 255
    add(train / 'cat' / 'b b.PNG', rgba, 1, 'RGBA', expect=white_row)
    def add_jpeg(path, label):  # lossy: expect what Pillow decodes
        expected.append((label, np.asarray(Image.open(save(path, rgb(rng))).convert('RGB'))))

    add_jpeg(train / 'cat' / 'c.JPG', 1)
    grey = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    add(train / 'dog' / 'ü 1.png', grey, 2, 'L', expect=np.repeat(grey[..., None], 3, axis=2))
    palette = Image.new('P', (6, 5))
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    index = rng.integers(0, 3, (5, 6), dtype=np.uint8)
    palette.putdata(index.ravel().tolist())
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    add(train / 'dog' / 'p.png', palette, 2, expect=colours[index])
    see_through = colours[index].copy()
    see_through[index == 0] = 255  # palette entry 0 transparent: white
    add(train / 'dog' / 'p2.png', palette, 2, expect=see_through, transparency=0)
    add_jpeg(train / 'dog' / 'nested' / 'd.jpeg', 2)
    add(train / '7_bird.png', rgb(rng), 0)  # flat, named by rename_files.py
    add(train / 'élan vital' / 'x.png', rgb(rng), 3)
    for junk in ('cat/.DS_Store', 'cat/Thumbs.db', 'dog/notes.txt', '.DS_Store', 'cat/._a.png'):
        (train / junk).write_bytes(b'\x00\x05junk')
    for i, name in enumerate(classes):
        save(root / 'test' / name / f'{i}.png', rgb(rng))
    (root / 'test' / 'Thumbs.db').write_bytes(b'junk')
    # Records follow the natural order of the paths: more/u2.PNG before u10.png.
    unlabeled = [save(root / 'unlabeled' / 'more' / 'u2.PNG', rgb(rng)),
                 save(root / 'unlabeled' / 'u10.png', rgb(rng))]
    (root / 'unlabeled' / '.DS_Store').write_bytes(b'junk')
    return classes, expected, [np.asarray(Image.open(p)) for p in unlabeled]


def sorted_records(images, labels):
    return sorted((int(label), image.tobytes()) for image, label in zip(images, labels))


def test_custom_real_world_mess(ml_data, tmp_path, small_chunks):
    root = tmp_path / 'my data ü'
    classes, expected, unlabeled = messy_dataset(root, np.random.default_rng(7))
    lines = custom.create_custom(str(ml_data), 'mydataset', str(root / 'train'), str(root / 'test'),
                             str(root / 'unlabeled'))
    images, labels = read_back(ml_data / 'mydataset-train.tfrecord')
    assert images.shape == (9, 5, 6, 3)
    assert sorted_records(images, labels) == sorted_records([e[1] for e in expected],
                                                            [e[0] for e in expected])
    test_images, test_labels = read_back(ml_data / 'mydataset-test.tfrecord')
    assert sorted(test_labels.tolist()) == [0, 1, 2, 3]
    u_images, u_labels = read_back(ml_data / 'mydataset-unlabeled.tfrecord')
    assert u_labels.tolist() == [-1, -1]
    np.testing.assert_array_equal(u_images, np.stack(unlabeled))
    check_mapping(ml_data, 'mydataset', classes)
    meta = records.read_meta(str(ml_data / 'mydataset-unlabeled.tfrecord'))
    assert meta['nclass'] == 4 and meta['label_counts'] == {'-1': 2}
    assert f'wrote {ml_data / "mydataset-train.tfrecord"}: 9 records' in lines

    # Re-running without --unlabeldir replaces the files and drops the stale unlabeled file,
    # which create_split would otherwise pick up.
    custom.create_custom(str(ml_data), 'mydataset', str(root / 'train'), str(root / 'test'))
    assert not (ml_data / 'mydataset-unlabeled.tfrecord').exists()
    assert not (ml_data / 'mydataset-unlabeled.tfrecord.json').exists()
    assert (ml_data / 'mydataset-train.tfrecord').exists()


def test_custom_greyscale_only_gives_one_channel(ml_data, tmp_path):
    rng = np.random.default_rng(8)
    grey = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    save(tmp_path / 'train' / 'a' / '1.png', grey, 'L')
    deep = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000 + 5000  # 16-bit values
    save(tmp_path / 'train' / 'a' / '2.png', deep)
    bits = Image.fromarray(np.eye(4, dtype=bool))  # 1-bit
    save(tmp_path / 'train' / 'b' / '3.png', bits)
    la = np.stack([grey, np.where(np.eye(4, dtype=bool), 0, 255).astype(np.uint8)], axis=2)
    save(tmp_path / 'train' / 'b' / '4.png', la, 'LA')
    for c in 'ab':
        save(tmp_path / 'test' / c / '5.png', grey, 'L')
    custom.create_custom(str(ml_data), 'grey', str(tmp_path / 'train'), str(tmp_path / 'test'))
    images, labels = read_back(ml_data / 'grey-train.tfrecord')
    assert images.shape == (4, 4, 4, 1) and labels.tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(images[0, ..., 0], grey)
    np.testing.assert_array_equal(images[1, ..., 0], np.round(deep / 257))  # scaled, not cut
    np.testing.assert_array_equal(images[2, ..., 0], np.eye(4) * 255)
    np.testing.assert_array_equal(images[3, ..., 0], np.where(np.eye(4, dtype=bool), 255, grey))


def test_custom_sizes_resize_and_exif_orientation(ml_data, tmp_path):
    rng = np.random.default_rng(9)
    small = save(tmp_path / 'train' / 'a' / 'small.png', rgb(rng, 4, 6))
    big = save(tmp_path / 'train' / 'b' / 'big.png', rgb(rng, 8, 6))
    for c in 'ab':
        save(tmp_path / 'test' / c / 't.png', rgb(rng, 4, 6))
    args = str(ml_data), 'sizes', str(tmp_path / 'train'), str(tmp_path / 'test')
    with pytest.raises(UserError, match=r'different sizes: .* is 6x4, .* is 6x8; pass --img_size'):
        custom.create_custom(*args)
    assert os.listdir(ml_data) == []
    custom.create_custom(*args, img_size=5)
    images, _ = read_back(ml_data / 'sizes-train.tfrecord')
    assert images.shape == (2, 5, 5, 3)
    for got, path in zip(images, (small, big)):  # the one filter of libml/images.py
        want = tf.image.resize(np.asarray(Image.open(path), np.float32), [5, 5], 'bilinear',
                               antialias=True)
        np.testing.assert_array_equal(got, np.clip(np.round(want.numpy()), 0, 255))

    # A photo stored sideways with an EXIF orientation counts (and is written) upright.
    sideways = rgb(rng, 6, 4)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    save(tmp_path / 'train' / 'b' / 'big.png', sideways, exif=exif)
    custom.create_custom(*args)
    images, labels = read_back(ml_data / 'sizes-train.tfrecord')
    np.testing.assert_array_equal(images[labels == 1][0], np.rot90(sideways, k=-1))


def test_custom_undecodable_images_listed_or_skipped(ml_data, tmp_path, caplog):
    rng = np.random.default_rng(10)
    for c in 'ab':
        save(tmp_path / 'train' / c / 'ok.png', rgb(rng))
        save(tmp_path / 'test' / c / 'ok.png', rgb(rng))
    (tmp_path / 'train' / 'a' / 'empty.png').write_bytes(b'')
    whole = save(tmp_path / 'train' / 'b' / 'cut.jpg', rgb(rng), quality=100).read_bytes()
    (tmp_path / 'train' / 'b' / 'cut.jpg').write_bytes(whole[:len(whole) // 2])
    args = str(ml_data), 'bad', str(tmp_path / 'train'), str(tmp_path / 'test')
    with pytest.raises(UserError, match=r'2 image\(s\) cannot be decoded: .*empty\.png.*cut\.jpg.*'
                                        r'--skip_bad_images'):
        custom.create_custom(*args)
    assert os.listdir(ml_data) == []  # nothing under a final name, no temporary left over
    lines = custom.create_custom(*args, skip_bad_images=True)
    assert f'wrote {ml_data / "bad-train.tfrecord"}: 2 records' in lines
    assert 'skipped 2 image(s)' in caplog.text


@pytest.mark.parametrize('layout, words', [
    ({'train/a/1.png', 'train/b/2.png', 'test/a/3.png', 'test/b/4.png', 'test/c/5.png'},
     ['"c"', 'c in --testdir', 'not in --traindir']),
    ({'train/a/1.png', 'train/b/2.png', 'test/a/3.png'}, ['b of --traindir', 'no images in']),
    ({'train/a/1.png', 'train/b/', 'test/a/3.png'}, ['without images: b']),
    ({'train/a/1.png', 'train/loose.png', 'test/a/3.png'}, ['cannot tell the class of loose.png']),
    ({'train/a/1.png'}, ['--testdir=', 'no such folder']),
])
def test_custom_folder_mistakes(ml_data, tmp_path, layout, words):
    for entry in layout:
        if entry.endswith('/'):
            (tmp_path / entry).mkdir(parents=True)
        else:
            save(tmp_path / entry, rgb(np.random.default_rng(11)))
    with pytest.raises(UserError) as error:
        custom.create_custom(str(ml_data), 'x', str(tmp_path / 'train'), str(tmp_path / 'test'))
    for word in words:
        assert word.strip('"') in str(error.value)
    assert os.listdir(ml_data) == []


# ----------------------------------------------------------------------------------------------
# The command line.

def test_command_digits_then_custom_with_flags_after_subsets(ml_data, tmp_path):
    """One run (TensorFlow starts once): digits builds in seconds, and the README's custom
    command works with its flags after the subsets and the original's short forms."""
    rng = np.random.default_rng(12)
    base = tmp_path / 'my data'
    for part in ('train', 'test'):
        for c in ('cat', 'dog'):
            save(base / part / c / '1.png', rgb(rng))
    save(base / 'unlabeled' / 'u.jpg', rgb(rng))
    start = time.time()
    result = assert_ok(run_script(SCRIPT, 'digits', 'custom', '-n', 'mydataset',
                                  '-tr', base / 'train', '--testdir', base / 'test',
                                  '-u', base / 'unlabeled'))
    assert time.time() - start < 60
    assert result.stdout.splitlines() == [
        f'wrote {ml_data / "digits-train.tfrecord"}: 1297 records',
        f'wrote {ml_data / "digits-test.tfrecord"}: 500 records',
        f'wrote {ml_data / "digits_class_mappings.json"}: 10 classes',
        f'wrote {ml_data / "mydataset-train.tfrecord"}: 2 records',
        f'wrote {ml_data / "mydataset-test.tfrecord"}: 2 records',
        f'wrote {ml_data / "mydataset-unlabeled.tfrecord"}: 1 records',
        f'wrote {ml_data / "mydataset_class_mappings.json"}: 2 classes']
    assert not [f for f in os.listdir(ml_data) if 'partial' in f]


@pytest.mark.parametrize('args, words', [
    (['cifar11'], ['unknown subset', 'cifar11', 'digits']),
    (['custom', '--name', 'my-data', '--traindir', '.', '--testdir', '.'], ['my-data', '"-"']),
    (['custom', '--name', 'my.data', '--traindir', '.', '--testdir', '.'], ['my.data']),
    (['custom', '--traindir', '.', '--testdir', '.'], ['--name']),
    (['custom', '--name', 'x', '--traindir', 'no/such/dir', '--testdir', '.'],
     ['--traindir=no/such/dir', 'no such folder']),
    (['digits', '--traindir', '.'], ['--traindir', 'only apply to the custom subset']),
])
def test_command_user_errors(ml_data, args, words):
    result = assert_user_error(run_script(SCRIPT, *args), *words)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert os.listdir(ml_data) == []


def test_command_class_mismatch_is_one_line(ml_data, tmp_path):
    rng = np.random.default_rng(13)
    save(tmp_path / 'train' / 'cat' / '1.png', rgb(rng))
    save(tmp_path / 'test' / 'cat' / '1.png', rgb(rng))
    save(tmp_path / 'test' / 'fox' / '2.png', rgb(rng))
    result = assert_user_error(run_script(SCRIPT, 'custom', '--name=pets',
                                          f'--traindir={tmp_path / "train"}',
                                          f'--testdir={tmp_path / "test"}'), 'fox', '--traindir')
    assert result.returncode == 2
    assert os.listdir(ml_data) == []


# ----------------------------------------------------------------------------------------------
# custom at scale (issue 19): each file decoded once, in worker processes, with the same bytes.

def pattern(h, w, c, seed):
    """Deterministic uint8 pixels [h, w, c] (integer arithmetic, no random generator)."""
    y, x, k = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing='ij')
    return ((x * (7 + seed) + y * (13 + 2 * seed) + k * 101 + (x * y * (seed + 3)) % 17
             + seed * 29) % 256).astype(np.uint8)


def pinned_folder(root, sizes=((8, 8),)):
    """train/test/unlabeled of JPEGs and PNGs of every kind the decoder converts: RGB, RGBA, grey,
    grey + alpha, palette with a transparent entry, 16-bit grey, a JPEG turned by its EXIF
    orientation. Image i is sizes[i % len(sizes)] (height, width)."""
    files = [('train/cat/a.jpg', 'RGB'), ('train/cat/b.png', 'RGBA'), ('train/cat/c.png', 'L'),
             ('train/dog/d.png', 'RGB'), ('train/dog/e.jpg', 'L'), ('train/dog/f.png', 'P'),
             ('train/emu/g.png', 'LA'), ('train/emu/h.png', 'I;16'), ('train/emu/i.jpg', 'EXIF'),
             ('test/cat/j.png', 'RGB'), ('test/dog/k.jpg', 'RGB'), ('test/emu/l.png', 'RGBA'),
             ('unlabeled/m.png', 'RGB'), ('unlabeled/n.jpg', 'L')]
    for i, (rel, mode) in enumerate(files):
        h, w = sizes[i % len(sizes)]
        kw = {}
        if mode == 'RGBA':
            px = pattern(h, w, 4, i)
            px[0, :, 3] = 0
            im = Image.fromarray(px)
        elif mode == 'L':
            im = Image.fromarray(pattern(h, w, 1, i)[..., 0])
        elif mode == 'LA':
            im = Image.fromarray(pattern(h, w, 2, i), 'LA')
        elif mode == 'I;16':
            im = Image.fromarray(pattern(h, w, 1, i)[..., 0].astype(np.uint16) * 251 + 7)
        elif mode == 'P':
            im = Image.fromarray(pattern(h, w, 1, i)[..., 0] % 4, 'P')
            im.putpalette([250, 10, 10, 10, 250, 10, 10, 10, 250, 200, 200, 0])
            kw['transparency'] = 2
        elif mode == 'EXIF':  # stored sideways, shown upright (orientation 6)
            im = Image.fromarray(pattern(w, h, 3, i))
            kw['exif'] = Image.Exif()
            kw['exif'][0x0112] = 6
        else:
            im = Image.fromarray(pattern(h, w, 3, i))
        save(root / rel, im, **kw)


def grey_folder(root):
    """Only grey images (1 channel): L, LA, 16-bit, a grey JPEG."""
    for i, (rel, kind) in enumerate([('train/a/1.png', 'L'), ('train/a/2.jpg', 'L'),
                                     ('train/b/3.png', 'LA'), ('train/b/4.png', 'I;16'),
                                     ('test/a/5.png', 'L'), ('test/b/6.png', 'LA')]):
        px = pattern(6, 7, 2, i)
        save(root / rel, {'L': Image.fromarray(px[..., 0]), 'LA': Image.fromarray(px, 'LA'),
                          'I;16': Image.fromarray(px[..., 0].astype(np.uint16) * 257)}[kind])


def digest(folder):
    """SHA-256 of every file in `folder` (names and bytes, in name order)."""
    h = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        h.update(path.name.encode() + b'\0' + path.read_bytes())
    return h.hexdigest()


# These digests pin the byte format of create_datasets.py custom: the records (their order,
# labels and PNG bytes), the .json metadata files and the class mapping. They were computed with
# the code before issue 19 (probe every header, then decode in a tf.data pipeline and encode with
# tf.io.encode_png); the rewrite must give the same bytes. JPEGs are written and read by Pillow's
# libjpeg-turbo: a libjpeg with another DCT would change them.
PINNED = {
    'mixed': (pinned_folder, {},
              'e2c01a77f930ae872d6746b2b830d3bc1a3e0cb049f324c410f63caa84c1e486'),
    'resized': (lambda root: pinned_folder(root, ((8, 8), (6, 10), (12, 9), (8, 8))),
                {'img_size': 8},
                '6e50dfce14af853e3c8cc6146755ba49581fea2d2312be7223b47e85229e3b11'),
    'grey': (grey_folder, {},
             '9ab24311210e1a3b35f150d4190e36b96ee8b215e111e450aa8e98184889fdfd'),
}


def create_pinned(kind, src, ml_data):
    make, kwargs, expected = PINNED[kind]
    make(src)
    unlabeled = src / 'unlabeled'
    custom.create_custom(str(ml_data), 'pinned', str(src / 'train'), str(src / 'test'),
                         str(unlabeled) if unlabeled.exists() else None, **kwargs)
    return expected


@pytest.mark.parametrize('kind', sorted(PINNED))
def test_custom_records_are_byte_for_byte_pinned(ml_data, tmp_path, kind):
    expected = create_pinned(kind, tmp_path / 'src', ml_data)
    assert digest(ml_data) == expected


@pytest.fixture
def workers(monkeypatch):
    """Worker processes even for a handful of images, 2 per task."""
    monkeypatch.setattr(custom, 'PARALLEL_FROM', 0)
    monkeypatch.setattr(custom, 'CHUNK', 2)


def test_custom_workers_give_the_pinned_bytes_and_errors(ml_data, tmp_path, workers, caplog,
                                                         monkeypatch):
    src = tmp_path / 'src'
    expected = create_pinned('mixed', src, ml_data)
    assert digest(ml_data) == expected
    # Unusable images are reported from the workers as from this process: listed, or skipped.
    (src / 'train' / 'dog' / 'empty.png').write_bytes(b'')
    whole = (src / 'train' / 'dog' / 'd.png').read_bytes()
    (src / 'train' / 'emu' / 'cut.png').write_bytes(whole[:len(whole) // 2])
    args = str(ml_data), 'pinned', str(src / 'train'), str(src / 'test'), str(src / 'unlabeled')
    with pytest.raises(UserError, match=r'^2 image\(s\) cannot be decoded: .*empty\.png.*cut\.png'):
        custom.create_custom(*args)
    assert digest(ml_data) == expected  # the files of the run before, untouched
    custom.create_custom(*args, skip_bad_images=True)
    assert digest(ml_data) == expected and 'skipped 2 image(s)' in caplog.text
    # A colour image after grey ones: read again with 3 channels, the same bytes as one pass.
    grey_first = tmp_path / 'grey first'
    for i, rel in enumerate(['train/a/0.png', 'train/a/1.png', 'train/a/2.png', 'train/b/3.png',
                             'test/a/4.png', 'test/b/5.png']):
        save(grey_first / rel, pattern(5, 6, 1, i)[..., 0] if i < 2 else pattern(5, 6, 3, i))
    once, twice = tmp_path / 'once', tmp_path / 'twice'
    for out, guess in ((once, 64), (twice, 1)):  # the guess reads up to a/2.png, or a/0.png
        out.mkdir()
        monkeypatch.setattr(custom, 'GUESS_GREY', guess)
        custom.create_custom(str(out), 'g', str(grey_first / 'train'), str(grey_first / 'test'))
    assert digest(once) == digest(twice)
    assert 'is in colour, the images before it grey: reading every image again' in caplog.text
    assert records.read_meta(str(once / 'g-train.tfrecord'))['channels'] == 3


def test_custom_workers_resize_like_this_process(ml_data, tmp_path, workers):
    """Resizing loads TensorFlow in the workers: the same pixels, the same bytes."""
    expected = create_pinned('resized', tmp_path / 'src', ml_data)
    assert digest(ml_data) == expected


def test_custom_workers_do_not_load_tensorflow(tmp_path):
    """A spawned worker runs the main script again (as __mp_main__), then its tasks: neither may
    import TensorFlow (seconds and ~600 MB per worker) unless images need resizing."""
    for i in range(3):
        save(tmp_path / f'{i}.png', pattern(4, 5, 3 if i else 4, i))
    code = ('import runpy, sys;'
            'runpy.run_path("scripts/create_datasets.py", run_name="__mp_main__");'
            'from libml.sources import custom; items = [(p, 0) for p in sys.argv[1:]];'
            'out = custom._process(items, (5, 4), False, 3, 10**6);'
            'assert all(record for _, _, record in out), out;'
            'print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")))')
    result = assert_ok(run_script('-c', code, *sorted(tmp_path.glob('*.png'))))
    assert result.stdout.strip() == '[]'


def test_encode_pngs_writes_the_bytes_of_tf_encode_png():
    rng = np.random.default_rng(19)
    shapes = [(1, 1), (1, 9), (9, 1), (2, 2), (32, 32), (33, 17), (96, 96), (300, 200), (5, 4000)]
    for (h, w), c in zip(shapes * 4, [1, 2, 3, 4] * 9):
        ramp = np.add.outer(np.arange(h), np.arange(w))[..., None] * 3
        smooth = ramp + rng.normal(0, 3, (h, w, c))
        batch = np.stack([rng.integers(0, 256, (h, w, c), dtype=np.uint8),  # deflates badly
                          np.full((h, w, c), 7, np.uint8),  # all filters tie
                          np.clip(smooth, 0, 255).astype(np.uint8),
                          (rng.integers(0, 4, (h, w, c)) * 85).astype(np.uint8)])
        for image, png in zip(batch, records.encode_pngs(batch)):
            assert png == tf.io.encode_png(image).numpy(), (h, w, c)


def test_make_example_writes_the_bytes_of_tf_train_example():
    def reference(png, label, source=None):
        feature = {'image': tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                   'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))}
        if source is not None:
            feature['source'] = tf.train.Feature(
                int64_list=tf.train.Int64List(value=[int(source)]))
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
            deterministic=True)

    for size in (0, 1, 127, 128, 16383, 16384, 2**21 + 5):  # varint lengths of 1 to 4 bytes
        png = bytes(range(256)) * (size // 256) + bytes(size % 256)
        for label in (-1, 0, 9, 127, 128, 2**31, -2**63, 2**63 - 1, np.int64(7)):
            for source in (None, 0, 300, 2**40):
                assert records.make_example(png, label, source) == reference(png, label, source)


def test_model_channels_in_numpy_are_to_model_pixels():
    """to_model_channels (numpy, create_datasets' workers) against to_model_pixels (TensorFlow,
    inference and export) on every grey/alpha pair and a spread of colours."""
    from libml import images
    value, alpha = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8))
    la = np.stack([value, alpha], axis=2)
    rgba = np.stack([value, 255 - value, value // 3 + 80, alpha], axis=2)
    rgb = np.random.default_rng(3).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    for pixels in (la, rgba, rgb, la[..., :1]):
        for channels in (1, 3):
            want = images.to_model_pixels(pixels, *pixels.shape[:2], channels).numpy()
            np.testing.assert_array_equal(images.to_model_channels(pixels, channels), want)


def test_command_custom_folder_without_classes_or_with_two_sizes(ml_data, tmp_path):
    """One line on stderr, exit 2, nothing written."""
    rng = np.random.default_rng(14)
    flat = tmp_path / 'flat'
    for part in ('train', 'test'):
        for i in range(3):
            save(flat / part / f'img{i}.jpg', rgb(rng))
    sizes = tmp_path / 'sizes'
    for part in ('train', 'test'):
        for c in ('a', 'b'):
            save(sizes / part / c / '1.png', rgb(rng, 5, 6))
    save(sizes / 'train' / 'b' / '2.png', rgb(rng, 7, 6))
    for folder, words in ((flat, ['cannot tell the class of img0.jpg', 'one sub-folder per class']),
                          (sizes, ['different sizes', '6x5', '6x7', '--img_size'])):
        result = assert_user_error(run_script(SCRIPT, 'custom', '--name=x',
                                              f'--traindir={folder / "train"}',
                                              f'--testdir={folder / "test"}'), *words)
        assert result.returncode == 2
        lines = [line for line in result.stderr.splitlines() if 'error' in line.lower()]
        assert len(lines) == 1 and lines[0].startswith('create_datasets.py: error: '), result.stderr
        assert os.listdir(ml_data) == []

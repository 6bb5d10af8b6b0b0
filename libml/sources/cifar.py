"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009), the "python version" archives, read in place.

Reads cifar-10-python.tar.gz (cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta) and
cifar-100-python.tar.gz (cifar-100-python/train, test, meta). Each batch is a Python 2 pickle of a
dict: b'data', uint8 [N, 3072], each row one 32x32 image as its 1024 red values (row-major), then
its 1024 green, then its 1024 blue; b'labels' (CIFAR-10) or b'fine_labels' (CIFAR-100; its 20
coarse labels are not used). The meta pickle lists b'label_names' or b'fine_label_names'.
Pickles go through archives.load_pickle, which rebuilds plain data and numpy arrays only.

Writes cifar10-train (50,000 images), cifar10-test (10,000), the same for cifar100, and
{name}_class_mappings.json with the meta file's names in its order.
"""
import numpy as np

from libml.sources import archives, download, output


def _text(value):
    return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def cifar_batch(raw, label_key, nclass):
    """One CIFAR pickle -> images [N, 32, 32, 3] uint8, labels [N] int64."""
    batch = archives.load_pickle(raw)
    rows = np.asarray(batch['data'])
    labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
    if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != 3072:
        raise ValueError(f'data is {rows.dtype}{list(rows.shape)}, expected uint8[N, 3072]')
    if len(labels) != len(rows) or (len(labels) and not 0 <= labels.min() <= labels.max() < nclass):
        raise ValueError(f'{label_key} do not match the images')
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar(path, folder, train_members, test_member, meta_member, label_key, names_key,
               nclass):
    """Reads a CIFAR archive -> (train images, train labels), (test...), class names."""
    members = [f'{folder}/{m}' for m in (*train_members, test_member, meta_member)]
    raw = archives.read_tar_members(path, members)
    with archives.archive_errors(path):
        names = [_text(n) for n in archives.load_pickle(raw[members[-1]])[names_key]]
        if len(names) != nclass:
            raise ValueError(f'{names_key} lists {len(names)} classes, expected {nclass}')
        train = [cifar_batch(raw[m], label_key, nclass) for m in members[:-2]]
        test = cifar_batch(raw[members[-2]], label_key, nclass)
    train = (np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train]))
    return train, test, names


def write_cifar(name, root, archive_dir, **layout):
    path = download.archive(layout.pop('archive'), archive_dir)
    train, test, names = load_cifar(path, **layout)
    lines = [output.write_part(name, part, root, images, labels, (32, 32, 3), names)
             for part, (images, labels) in (('train', train), ('test', test))]
    return lines + [output.write_mapping(name, names, root)]


def create_cifar10(root, archive_dir):
    return write_cifar('cifar10', root, archive_dir, archive='cifar-10-python.tar.gz',
                       folder='cifar-10-batches-py',
                       train_members=[f'data_batch_{i}' for i in range(1, 6)],
                       test_member='test_batch', meta_member='batches.meta',
                       label_key='labels', names_key='label_names', nclass=10)


def create_cifar100(root, archive_dir):
    return write_cifar('cifar100', root, archive_dir, archive='cifar-100-python.tar.gz',
                       folder='cifar-100-python', train_members=['train'], test_member='test',
                       meta_member='meta', label_key='fine_labels', names_key='fine_label_names',
                       nclass=100)

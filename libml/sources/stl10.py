"""STL-10 (Coates, Lee and Ng, 2011): stl10_binary.tar.gz, read in place.

Reads, in stl10_binary/: train_X.bin, test_X.bin and unlabeled_X.bin, raw uint8 images of
96x96x3 bytes each, an image being its red, green and blue planes, each plane stored column by
column; train_y.bin and test_y.bin, one byte per image, 1..10; class_names.txt, one name per line;
fold_indices.txt, one line per training fold of 0-based indices into the training images.
The readers are hand-written: the format is raw bytes with no library of its own, and numpy
reads it with one reshape.

Writes stl10-train (5,000 images), stl10-test (8,000), stl10-unlabeled (100,000, label -1,
streamed: 2.8 GB of pixels), stl10_folds.json (the 10 folds as a JSON list of lists of record
indices into stl10-train.tfrecord) and stl10_class_mappings.json.
"""
import contextlib
import os

import numpy as np

from libml import files, names
from libml.sources import archives, download, output

STL_SIDE = 96
STL_BYTES = STL_SIDE * STL_SIDE * 3
SHAPE = (STL_SIDE, STL_SIDE, 3)


def stl_images(raw):
    """STL-10 binary -> [N, 96, 96, 3]: each image is 3 planes (R, G, B), each column-major."""
    if len(raw) % STL_BYTES:
        raise ValueError(f'{len(raw)} bytes is not a whole number of 96x96x3 images')
    return np.frombuffer(raw, np.uint8).reshape(-1, 3, STL_SIDE, STL_SIDE).transpose(0, 3, 2, 1)


def stl_labels(raw, count):
    labels = np.frombuffer(raw, np.uint8).astype(np.int64) - 1  # 1..10 -> 0..9
    if len(labels) != count or (count and not 0 <= labels.min() <= labels.max() < 10):
        raise ValueError('the labels do not match the images')
    return labels


def stl_folds(text, count):
    """fold_indices.txt: one line per fold, 0-based indices into the training images."""
    folds = [[int(i) for i in line.split()] for line in text.splitlines() if line.strip()]
    if any(not 0 <= i < count for fold in folds for i in fold):
        raise ValueError('a fold index is out of range')
    return folds


def stl_unlabeled_chunks(tar, member, path):
    """Streams the unlabeled images from the tar member: 100,000 of them are 2.8 GB."""
    with archives.archive_errors(path):
        f = tar.extractfile(member)
        for start in range(0, member.size, output.CHUNK * STL_BYTES):
            raw = f.read(min(output.CHUNK * STL_BYTES, member.size - start))
            images = stl_images(raw)
            yield images, np.full(len(images), -1, np.int64)


def read_stl10(tar, path):
    """Class names, {part: (images, labels)} for train and test, folds, the unlabeled entry."""
    small = ['class_names.txt', 'fold_indices.txt', 'train_X.bin', 'train_y.bin', 'test_X.bin',
             'test_y.bin']
    raw, entries = archives.tar_members(tar, path, [f'stl10_binary/{m}' for m in small],
                                        ['stl10_binary/unlabeled_X.bin'])
    raw = {k.split('/', 1)[1]: v for k, v in raw.items()}
    with archives.archive_errors(path):
        class_names = [n.strip() for n in raw['class_names.txt'].decode('utf-8').splitlines()
                 if n.strip()]
        parts = {}
        for part in ('train', 'test'):
            images = stl_images(raw[f'{part}_X.bin'])
            parts[part] = images, stl_labels(raw[f'{part}_y.bin'], len(images))
        folds = stl_folds(raw['fold_indices.txt'].decode('ascii'), len(parts['train'][0]))
    return class_names, parts, folds, entries['stl10_binary/unlabeled_X.bin']


def create_stl10(root, archive_dir):
    path = download.archive('stl10_binary.tar.gz', archive_dir)
    with contextlib.closing(archives.open_tar(path)) as tar:
        class_names, parts, folds, unlabeled = read_stl10(tar, path)
        lines = [output.write_part('stl10', part, root, *parts.pop(part), SHAPE, class_names)
                 for part in ('train', 'test')]  # each part freed once written
        out = names.record_path('stl10', 'unlabeled', root)
        count = output.write_records(out, stl_unlabeled_chunks(tar, unlabeled, path), SHAPE,
                                     class_names, unlabeled.size // STL_BYTES)
        lines.append(output.records_line(out, count))
    folds_path = os.path.join(root, 'stl10_folds.json')
    files.write_json(folds_path, folds)
    lines.append(f'wrote {folds_path}: {len(folds)} folds')
    return lines + [output.write_mapping('stl10', class_names, root)]

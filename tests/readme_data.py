"""Tiny data for tests/test_readme.py: the public archives in their publishers' exact formats
(written by the archive writers of tests/test_create_datasets.py) and a custom `mydataset` folder.

Sizes are the smallest that let every README command run as written (see SIZES in
tests/test_readme.py for why each number is what it is).
"""
import os

import numpy as np
from PIL import Image

from conftest import make_images
from test_create_datasets import (STL_NAMES, cifar_batch, make_cifar10, make_svhn, py2_pickle,
                                  random_images, stl_bytes, write_tar)

# CIFAR-10: README 2.3 trains cifar6_mismatch50_aug*.1@250-500, i.e. 500 validation images taken
# from the cifar10.1@250 unlabeled images of classes 0, 1, 6, 7 (about 40% of them): 2000 train
# images leave 1750 unlabeled, about 700 of those classes.
CIFAR10_PER_BATCH = 400          # x 5 data batches = 2000 train images
CIFAR10_TEST = 100
CIFAR100_TRAIN, CIFAR100_TEST = 12, 4
SVHN = {'train': 300, 'test': 40, 'extra': 6}     # svhn.{seed}@250 needs >= 250 train images
STL10_TRAIN, STL10_TEST, STL10_UNLABELED = 4, 3, 5

# mydataset (README 1.2.1 / 2.2 / 3.2): --nclass=20 --img_size=32, --label_size=500.
MYDATASET_CLASSES = [f'class{i:02d}' for i in range(20)]
MYDATASET_TRAIN = 500            # --label_size=500: exactly the labeled pool
MYDATASET_TEST_PER_CLASS = 2
MYDATASET_UNLABELED = 60


def cifar10_train_count():
    return 5 * CIFAR10_PER_BATCH


def write_archives(folder, seed=0):
    """Every archive create_datasets.py reads, under its canonical name, into `folder`."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    make_cifar10(os.path.join(folder, 'cifar-10-python.tar.gz'), rng,
                 per_batch=CIFAR10_PER_BATCH, test=CIFAR10_TEST)

    names = [f'fine_{i:03d}' for i in range(100)]
    train = random_images(rng, CIFAR100_TRAIN, 32), rng.integers(0, 100, CIFAR100_TRAIN)
    test = random_images(rng, CIFAR100_TEST, 32), rng.integers(0, 100, CIFAR100_TEST)
    write_tar(os.path.join(folder, 'cifar-100-python.tar.gz'), {
        'cifar-100-python/train': cifar_batch(*train, ['fine_labels', 'coarse_labels']),
        'cifar-100-python/test': cifar_batch(*test, ['fine_labels', 'coarse_labels']),
        'cifar-100-python/meta': py2_pickle({'fine_label_names': names,
                                             'coarse_label_names': [f'c{i}' for i in range(20)]})})

    from pathlib import Path
    make_svhn(Path(folder), rng, SVHN)

    stl_train = random_images(rng, STL10_TRAIN, 96), rng.integers(0, 10, STL10_TRAIN)
    stl_test = random_images(rng, STL10_TEST, 96), rng.integers(0, 10, STL10_TEST)
    write_tar(os.path.join(folder, 'stl10_binary.tar.gz'), {
        'stl10_binary/train_X.bin': stl_bytes(stl_train[0]),
        'stl10_binary/train_y.bin': (stl_train[1] + 1).astype(np.uint8).tobytes(),
        'stl10_binary/test_X.bin': stl_bytes(stl_test[0]),
        'stl10_binary/test_y.bin': (stl_test[1] + 1).astype(np.uint8).tobytes(),
        'stl10_binary/unlabeled_X.bin': stl_bytes(random_images(rng, STL10_UNLABELED, 96)),
        'stl10_binary/class_names.txt': ('\n'.join(STL_NAMES) + '\n').encode(),
        'stl10_binary/fold_indices.txt': b'0 1 \n2 3 \n'})
    return sorted(os.listdir(folder))


def mydataset_counts():
    """{part: image count} of write_mydataset."""
    return {'train': MYDATASET_TRAIN, 'test': MYDATASET_TEST_PER_CLASS * len(MYDATASET_CLASSES),
            'unlabeled': MYDATASET_UNLABELED}


def write_mydataset(root):
    """$ML_DATA/mydataset/{train/<20 classes>, unlabeled, test/<20 classes>}: 32x32 RGB PNGs whose
    class is visible (conftest.make_images). Returns {part: image count}."""
    nclass = len(MYDATASET_CLASSES)
    parts = {'train': MYDATASET_TRAIN, 'test': MYDATASET_TEST_PER_CLASS * nclass}
    for seed, (part, n) in enumerate(parts.items()):
        images, labels = make_images(n, (32, 32, 3), nclass, seed=seed)
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = os.path.join(root, part, MYDATASET_CLASSES[label])
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(image).save(os.path.join(folder, f'img{i}.png'))
    images, _ = make_images(MYDATASET_UNLABELED, (32, 32, 3), nclass, seed=9)
    os.makedirs(os.path.join(root, 'unlabeled'), exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(os.path.join(root, 'unlabeled', f'u{i}.png'))
    return mydataset_counts()

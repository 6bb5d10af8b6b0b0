#!/usr/bin/env python3
"""Builds the record files of the public datasets, the shipped `digits` set, or your own images.

Usage:
  scripts/create_datasets.py [SUBSET ...]
  scripts/create_datasets.py custom --name=mydataset --traindir=DIR --testdir=DIR [--unlabeldir=DIR]

SUBSET is digits, cifar10, cifar100, svhn, stl10 or custom; none means all but custom. Flags may
come before or after the subsets; the short forms -n -tr -ts -u of the original work too.

Writes under $ML_DATA (./data when unset), each record file with its metadata `X.tfrecord.json`:
  digits    digits-train (1297), digits-test (500): scikit-learn's 8x8 grey digits, see below
  cifar10   cifar10-train (50000), cifar10-test (10000)
  cifar100  cifar100-train (50000), cifar100-test (10000): the 100 fine labels
  svhn      svhn-train (73257), svhn-test (26032), svhn-extra (531131); digit 0 is label 0
  stl10     stl10-train (5000), stl10-test (8000), stl10-unlabeled (100000, label -1), and
            stl10_folds.json: the 10 predefined training folds of fold_indices.txt as a JSON list of
            10 lists of record indices (0-based) into stl10-train.tfrecord
  custom    {name}-train, {name}-test and, with --unlabeldir, {name}-unlabeled (label -1)
and every dataset's class names in {name}_class_mappings.json ({"0": "airplane", ...}).
Re-running re-creates the files; each appears complete or not at all (never half written).

Public archives are read in place from --archive_dir (default $ML_DATA/downloads) under their
canonical names: cifar-10-python.tar.gz, cifar-100-python.tar.gz, {train,test,extra}_32x32.mat,
stl10_binary.tar.gz. A missing one is downloaded from its canonical URL and checked against its
published MD5. Nothing is extracted to disk, and CIFAR's pickles are read by an unpickler that
accepts only plain data and numpy arrays (a downloaded pickle is untrusted input). No archive
member larger than the published one is read (MEMBER_LIMITS), and an SVHN file larger than the
published one can be (on disk or once decompressed), or whose X and y do not have its shapes, is
refused before it is loaded, so a damaged or hostile archive cannot fill memory. SVHN's files are
loaded whole: building svhn-extra takes about 2.3 GB of memory.

digits: sklearn.datasets.load_digits (1,797 images, values 0..16) scaled to uint8 by
floor(v * 255 / 16 + 0.5), one channel. Test set: 500 images, stratified: class c gets its share
500 * n_c / 1797 rounded by largest remainder (ties to the lower class), and takes the first images
of class c met in the order numpy.random.RandomState(0).permutation(1797); train is the other 1297.
Records keep load_digits order.

custom: --traindir and --testdir hold one sub-folder per class (nested folders inside a class
folder are fine); an image placed directly in them must be named {n}_{class}.ext (as
scripts/rename_files.py names them) and gets that class. Class names: the sorted union of the
training classes; the test set must have the same classes. --unlabeldir is searched recursively
(folders ignored, label -1). The three folders must be distinct and none inside another.
Which files, in which order, and their pixels follow libml/images.py, the module inference uses
too, so a model sees the same pixels for the same file in training and in prediction:
.png .jpg .jpeg in any letter case, regular files only (a FIFO named x.png is skipped); hidden
files and folders, __MACOSX, .DS_Store, Thumbs.db, desktop.ini and other files are ignored.
Images are turned upright from their EXIF orientation. Channels: 1 if every image is greyscale
(1-bit, 8-bit or 16-bit grey, with or without alpha), else 3 (grey images are replicated,
palette/CMYK images converted to RGB). Transparent pixels are composited onto white; 16-bit
grey is scaled to 8 bits by round(v/257). All images must have one size, or pass --img_size=S to
resize every image to SxS (bilinear, antialiased when shrinking, aspect ratio not kept; images
already SxS are kept as they are). An image larger than --max_image_pixels (default 40
megapixels) is refused from its header before anything is decoded. Images that cannot be decoded
(or are too large) are an error listing them, or are left out with --skip_bad_images. Records
follow the natural order of their paths relative to the folder (img2 before img10, folder by
folder). Without --unlabeldir, a {name}-unlabeled file left by an earlier run is removed
(create_split would pick it up).
"""
import os

from absl import flags

from libml import images, names, utils
from libml.sources import cifar, custom, custom_folders, digits, stl10, svhn
from libml.utils import UserError

FLAGS = flags.FLAGS

PUBLIC = ('digits', 'cifar10', 'cifar100', 'svhn', 'stl10')
SUBSETS = PUBLIC + ('custom',)
CUSTOM_FLAGS = ('name', 'traindir', 'testdir', 'unlabeldir', 'img_size', 'skip_bad_images',
                'max_image_pixels')
CREATORS = {'digits': digits.create_digits, 'cifar10': cifar.create_cifar10,
            'cifar100': cifar.create_cifar100, 'svhn': svhn.create_svhn,
            'stl10': stl10.create_stl10}


flags.DEFINE_string('name', None, 'custom: the dataset name (letters, digits, "_").',
                    short_name='n')
flags.DEFINE_string('traindir', None, 'custom: training images, one sub-folder per class.',
                    short_name='tr')
flags.DEFINE_string('testdir', None, 'custom: test images, one sub-folder per class.',
                    short_name='ts')
flags.DEFINE_string('unlabeldir', None, 'custom: unlabeled images (optional).',
                    short_name='u')
flags.DEFINE_integer('img_size', None, 'custom: resize every image to this many pixels '
                     'square (needed when the images have different sizes).', lower_bound=1)
flags.DEFINE_bool('skip_bad_images', False,
                  'custom: leave out images that cannot be decoded or are larger than '
                  '--max_image_pixels (else it is an error).')
flags.DEFINE_integer('max_image_pixels', images.MAX_IMAGE_PIXELS,
                     'custom: refuse images larger than this many pixels (width x height), '
                     'from their header, before decoding.', lower_bound=1)
flags.DEFINE_string('archive_dir', None, 'Where the public archives are read from and '
                    'downloaded to (default: $ML_DATA/downloads).')


def parse_subsets(args):
    """The subsets to build, in the given order without repeats; none given = the public ones."""
    unknown = [a for a in args if a not in SUBSETS]
    if unknown:
        raise UserError(f'unknown subset(s) {", ".join(unknown)}; choose from '
                        f'{", ".join(SUBSETS)} (none = {" ".join(PUBLIC)}).')
    return list(dict.fromkeys(args)) or list(PUBLIC)


def check_custom_flags(subsets):
    """Custom-only flags need the custom subset; custom needs its name and folders."""
    if 'custom' not in subsets:
        given = [f'--{f}' for f in CUSTOM_FLAGS if FLAGS[f].present]
        if given:
            raise UserError(f'{", ".join(given)} only apply to the custom subset; e.g. '
                            'create_datasets.py custom --name=mydataset --traindir=... '
                            '--testdir=...')
        return
    if not FLAGS.name:
        raise UserError('custom needs --name=NAME (letters, digits, "_"), e.g. --name=mydataset.')
    names.check_name(FLAGS.name)
    custom_folders.require_dir(FLAGS.traindir, '--traindir')
    custom_folders.require_dir(FLAGS.testdir, '--testdir')
    if FLAGS.unlabeldir:
        custom_folders.require_dir(FLAGS.unlabeldir, '--unlabeldir')
    custom_folders.check_folders(FLAGS.traindir, FLAGS.testdir, FLAGS.unlabeldir)


def main(argv):
    subsets = parse_subsets(argv[1:])
    check_custom_flags(subsets)
    root = utils.ml_data()
    archive_dir = FLAGS.archive_dir or os.path.join(root, 'downloads')
    for subset in subsets:
        if subset == 'custom':
            lines = custom.create_custom(root, FLAGS.name, FLAGS.traindir, FLAGS.testdir,
                                         FLAGS.unlabeldir, FLAGS.img_size, FLAGS.skip_bad_images,
                                         FLAGS.max_image_pixels)
        else:
            lines = CREATORS[subset](root, archive_dir)
        print('\n'.join(lines), flush=True)  # the tool's output: what was written


if __name__ == '__main__':
    utils.run(main)

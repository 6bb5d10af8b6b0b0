"""custom, step 1: the user's folders of images, checked and listed.

Reads --traindir and --testdir (one sub-folder per class, or images named {n}_{class}.ext
directly inside, as scripts/rename_files.py names them) and the optional --unlabeldir (searched
recursively, labels ignored). Which files count, in which order, and the class of each come from
libml/images.py, the one module that lists image folders for every tool. Class names: the sorted
union of the training classes; the test set must have the same classes. The three folders must be
distinct and none inside another. Nothing is opened here (names and `stat` only).
"""
import os

from absl import logging

from libml import folders
from libml.utils import UserError


def some(names, limit=5):
    """'a, b, c, d, e and 3 more': the first `limit` of `names`, for messages."""
    names = [str(n) for n in names]
    more = f' and {len(names) - limit} more' if len(names) > limit else ''
    return ', '.join(names[:limit]) + more


def require_dir(folder, flag):
    if not folder:
        raise UserError(f'custom needs {flag}=DIR.')
    if not os.path.isdir(folder):
        raise UserError(f'{flag}={folder}: no such folder.')


def check_folders(traindir, testdir, unlabeldir=None):
    """Refuses folders that are the same or inside one another: test images would be trained on
    (or counted twice), unlabeled images would include labeled ones."""
    given = [(flag, folder) for flag, folder in (('--traindir', traindir), ('--testdir', testdir),
                                                 ('--unlabeldir', unlabeldir)) if folder]
    real = {flag: os.path.realpath(folder) for flag, folder in given}
    for i, (a, a_dir) in enumerate(given):
        for b, b_dir in given[i + 1:]:
            if real[a] == real[b]:
                raise UserError(f'{a}={a_dir} and {b}={b_dir} are the same folder; give each '
                                'part its own folder.')
            for (inner, inner_dir), (outer, outer_dir) in (((a, a_dir), (b, b_dir)),
                                                           ((b, b_dir), (a, a_dir))):
                if os.path.commonpath([real[inner], real[outer]]) == real[outer]:
                    raise UserError(f'{inner}={inner_dir} is inside {outer}={outer_dir}: its '
                                    f'images would also be read as {outer} images; give each '
                                    'part its own folder, side by side.')


def _warn_ignored(skipped, folder):
    """Warns about the files passed over that may have been meant as images."""
    quiet = (folders.HIDDEN, folders.MACOS_FOLDER)
    others = [f'{rel} ({reason})' for rel, reason in skipped if reason not in quiet
              and os.path.basename(rel).lower() not in folders.SYSTEM_FILES]
    if others:
        logging.warning('ignored %d file(s) in %s that are not usable images, e.g. %s',
                        len(others), folder, others[0])


def scan_labeled(folder, flag):
    """[(path, class name)] of a train/test folder: class sub-folders, or flat {n}_{class}.ext."""
    require_dir(folder, flag)
    listing = folders.list_images(folder)
    _warn_ignored(listing.skipped, folder)
    items, unnamed = [], []
    for rel in listing.images:
        cls = folders.class_of(rel)
        if cls is None:
            unnamed.append(rel)
        else:
            items.append((listing.path(rel), cls))
    used = {folders.class_of(rel, numbered_names=False) for rel in listing.images}
    if empty := [f for f in listing.folders if f not in used]:
        raise UserError(f'{flag}={folder}: class folder(s) without images: {", ".join(empty)}; '
                        'add images or remove them.')
    if unnamed:
        raise UserError(f'{flag}={folder}: cannot tell the class of {some(unnamed)}: put images '
                        'in one sub-folder per class, or name them {n}_{class}.png.')
    if not items:
        raise UserError(f'{flag}={folder} holds no .png/.jpg/.jpeg images; it needs one '
                        'sub-folder of images per class.')
    return items


def scan_unlabeled(folder, flag='--unlabeldir'):
    require_dir(folder, flag)
    listing = folders.list_images(folder)
    _warn_ignored(listing.skipped, folder)
    if not listing.images:
        raise UserError(f'{flag}={folder} holds no .png/.jpg/.jpeg images.')
    return [listing.path(rel) for rel in listing.images]


def plan(traindir, testdir, unlabeldir):
    """Class names, and {part: [(path, label)]} for train, test and (optionally) unlabeled."""
    check_folders(traindir, testdir, unlabeldir)
    train = scan_labeled(traindir, '--traindir')
    test = scan_labeled(testdir, '--testdir')
    names = sorted({c for _, c in train})
    test_classes = {c for _, c in test}
    if extra := sorted(test_classes - set(names)):
        raise UserError(f'class(es) {some(extra)} in --testdir={testdir} are not in '
                        f'--traindir={traindir}.')
    if absent := [c for c in names if c not in test_classes]:
        raise UserError(f'class(es) {some(absent)} of --traindir={traindir} have no images in '
                        f'--testdir={testdir}.')
    index = {c: i for i, c in enumerate(names)}
    parts = {'train': [(p, index[c]) for p, c in train], 'test': [(p, index[c]) for p, c in test]}
    if unlabeldir:
        parts['unlabeled'] = [(p, -1) for p in scan_unlabeled(unlabeldir)]
    return names, parts

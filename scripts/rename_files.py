#!/usr/bin/env python3
"""Renames the images of a custom data set to `{number}_{class_name}.{ext}` (README 1.2.1).

    python scripts/rename_files.py --targetdir $ML_DATA/mydataset/ --index 0 --filetype png
    python scripts/rename_files.py --targetdir $ML_DATA/mydataset/ --dry_run   # show the plan only
    python scripts/rename_files.py --undo $ML_DATA/mydataset/rename_log-20240101-120000.tsv

Which images, which names
  Every image under --targetdir with the extension of --filetype (png: .png; jpg: .jpg and .jpeg;
  any case) is numbered from --index, in the order every tool of the project lists a folder
  (libml/images.py: natural order of the paths, numbers in names sorted as numbers, folder by
  folder), one counter for the whole folder, so a number identifies one image across train, test
  and unlabeled. An image's class is the name of the folder it is in:
      train/cat/a.png        -> train/cat/0_cat.png
      test/cat/b.png         -> test/cat/1_cat.png
  Images with no class -- anywhere under a folder named `unlabeled` (or `unlabelled`), or directly
  in --targetdir -- are numbered without a class: unlabeled/c.png -> unlabeled/2.png (their label
  is never read, and a class suffix would be a made-up one). An image directly in a `train/` or
  `test/` folder is an error: it needs a class folder. What libml/images.py passes over is left
  alone: hidden files and folders, __MACOSX, other types, anything that is not a regular file.
  The extension is kept, lower-cased (a.JPEG -> 3_cat.jpeg).

Safety
  - Nothing is overwritten, ever: an image already named `{n}_{class}` (in its class folder) or
    `{n}` (unlabelled) keeps its name and number, new numbers skip the numbers in use, and if a
    planned name is taken by any other file, the script stops before renaming anything.
    Re-running on a renamed folder therefore changes nothing; images added later get new numbers.
  - --dry_run prints the plan (`old -> new`, paths relative to --targetdir) and changes nothing.
  - Before renaming, the plan is written to `{targetdir}/rename_log-{YYYYmmdd-HHMMSS}.tsv`
    (tab-separated `old`, `new`, paths relative to the log's folder, so the folder may be moved);
    `--undo LOGFILE` renames every file back, also after an interrupted run (entries not yet done
    are skipped), and again stops before renaming anything if a file is missing or in the way.
"""
import csv
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import libml  # noqa: E402,F401  (no TensorFlow here; kept so every script starts the same way)
from absl import flags  # noqa: E402
from tqdm import tqdm  # noqa: E402

from libml import images, utils  # noqa: E402
from libml.utils import UserError  # noqa: E402

flags.DEFINE_string('targetdir', None, 'The data set folder (e.g. $ML_DATA/mydataset/ holding '
                    'train/<class>/, test/<class>/, unlabeled/), or one of its split folders.')
flags.DEFINE_integer('index', 0, 'First number to give.', lower_bound=0, allow_override=True)
flags.DEFINE_enum('filetype', 'png', ['png', 'jpg', 'jpeg'], 'Which images to rename: png, or jpg '
                  '(.jpg and .jpeg files); any case.', case_sensitive=False)
flags.DEFINE_bool('dry_run', False, 'Print the plan and change nothing.', allow_override=True)
flags.DEFINE_string('undo', None, 'A rename_log-*.tsv written by an earlier run: rename its files '
                    'back.')

FLAGS = flags.FLAGS

EXTENSIONS = {'png': ('.png',), 'jpg': ('.jpg', '.jpeg'), 'jpeg': ('.jpg', '.jpeg')}
UNLABELLED_FOLDERS = ('unlabeled', 'unlabelled')
SPLIT_FOLDERS = ('train', 'test')
LOG_HEADER = ['old', 'new']


def _images(root, filetype):
    """Relative paths of the images of `filetype` under `root`, in the shared natural order."""
    return [rel.replace('/', os.sep) for rel in images.list_images(root).images
            if os.path.splitext(rel)[1].lower() in EXTENSIONS[filetype]]


def _class_of(rel):
    """The class of the image at relative path `rel`, None if it has none."""
    parts = rel.split(os.sep)[:-1]
    if not parts or any(p.lower() in UNLABELLED_FOLDERS for p in parts):
        return None
    if len(parts) == 1 and parts[0].lower() in SPLIT_FOLDERS:
        raise UserError(f'{rel}: an image directly in {parts[0]}/ has no class; move it into a '
                        f'class folder ({parts[0]}/<class>/).')
    return parts[-1]


def plan_renames(root, index=0, filetype='png'):
    """[(old, new)] relative paths to rename, and the number of images already named.

    Raises UserError, before anything is renamed, if a planned name is taken by another file.
    """
    if not os.path.isdir(root):
        raise UserError(f'--targetdir={root} is not a folder.')
    images = _images(root, filetype)
    todo, used, done = [], set(), 0
    for rel in images:
        cls = _class_of(rel)
        stem, ext = os.path.splitext(os.path.basename(rel))
        m = re.fullmatch(r'(\d+)' if cls is None else r'(\d+)_' + re.escape(cls), stem)
        if m and ext == ext.lower():
            used.add(int(m.group(1)))
            done += 1
        else:
            todo.append((rel, cls, ext.lower()))
    plan, number, sources = [], index, set(rel for rel, _, _ in todo)
    for rel, cls, ext in todo:
        while number in used:
            number += 1
        name = f'{number}{ext}' if cls is None else f'{number}_{cls}{ext}'
        plan.append((rel, os.path.join(os.path.dirname(rel), name)))
        number += 1
    taken = [new for _, new in plan
             if os.path.lexists(os.path.join(root, new)) and new not in sources]
    if taken:
        raise UserError(f'{len(taken)} planned name(s) are taken by other files, e.g. '
                        f'{os.path.join(root, taken[0])}; nothing was renamed. Move them away or '
                        'start at another --index.')
    if any(new in sources for _, new in plan):
        # Cannot happen with fresh numbers, but a rename chain could overwrite: refuse rather.
        raise UserError('the plan would rename a file onto another one; nothing was renamed.')
    return plan, done


def _log_path(root):
    stamp = time.strftime('%Y%m%d-%H%M%S')
    path, k = os.path.join(root, f'rename_log-{stamp}.tsv'), 1
    while os.path.exists(path):  # two runs in one second
        k += 1
        path = os.path.join(root, f'rename_log-{stamp}-{k}.tsv')
    return path


def write_log(path, plan):
    # csv quotes names holding tabs or newlines; surrogateescape keeps undecodable names exact.
    with utils.atomic_output(path, overwrite=False) as tmp:
        with open(tmp, 'w', newline='', encoding='utf-8', errors='surrogateescape') as f:
            writer = csv.writer(f, delimiter='\t', lineterminator='\n')
            writer.writerow(LOG_HEADER)
            for old, new in plan:
                writer.writerow([old.replace(os.sep, '/'), new.replace(os.sep, '/')])


def read_log(path):
    try:
        with open(path, newline='', encoding='utf-8', errors='surrogateescape') as f:
            rows = list(csv.reader(f, delimiter='\t'))
    except FileNotFoundError:
        raise UserError(f'--undo={path}: no such file.') from None
    if not rows or rows[0] != LOG_HEADER or any(len(r) != 2 for r in rows[1:]):
        raise UserError(f'--undo={path} is not a log written by rename_files.py.')
    return [(old.replace('/', os.sep), new.replace('/', os.sep)) for old, new in rows[1:]]


def _rename_all(root, moves, desc):
    """Renames (src, dst) relative paths, stopping if a destination appeared meanwhile."""
    for src, dst in tqdm(moves, unit='file', desc=desc, disable=len(moves) < 1000):
        full = os.path.join(root, dst)
        if os.path.lexists(full):
            raise UserError(f'{full} appeared while renaming; stopped before overwriting it.')
        os.rename(os.path.join(root, src), full)


def rename(root, index=0, filetype='png', dry_run=False):
    """Plans and (unless dry_run) performs the renaming; returns (plan, already named, log path)."""
    plan, done = plan_renames(root, index, filetype)
    if dry_run or not plan:
        return plan, done, None
    log = _log_path(root)
    write_log(log, plan)
    _rename_all(root, plan, 'rename')
    return plan, done, log


def undo(log):
    """Renames the files of `log` back; returns (renamed back, already in place)."""
    root = os.path.dirname(os.path.abspath(log))
    moves, skipped, problems = [], 0, []
    for old, new in read_log(log):
        has_old = os.path.lexists(os.path.join(root, old))
        has_new = os.path.lexists(os.path.join(root, new))
        if has_new and not has_old:
            moves.append((new, old))
        elif has_old and not has_new:
            skipped += 1  # never renamed (interrupted run) or already undone
        else:
            problems.append(f'{old} and {new} both exist' if has_old else f'{new} is missing')
    if problems:
        raise UserError(f'cannot undo {log}: {problems[0]}'
                        + (f' (and {len(problems) - 1} more)' if len(problems) > 1 else '')
                        + '; nothing was renamed.')
    _rename_all(root, moves[::-1], 'undo')
    return len(moves), skipped


def main(argv):
    utils.no_extra_args(argv, 'usage: scripts/rename_files.py --targetdir DIR [--index 0] '
                              '[--filetype png|jpg] [--dry_run] | --undo LOGFILE')
    if FLAGS.undo:
        renamed, skipped = undo(FLAGS.undo)
        print(f'renamed {renamed} file(s) back as listed in {FLAGS.undo}'
              + (f' ({skipped} already had their old name)' if skipped else ''))
        return
    if not FLAGS.targetdir:
        raise UserError('--targetdir is required: the data set folder, e.g. $ML_DATA/mydataset/.')
    root = os.path.abspath(FLAGS.targetdir)
    plan, done, log = rename(root, FLAGS.index, FLAGS.filetype.lower(), FLAGS.dry_run)
    if FLAGS.dry_run:
        for old, new in plan:
            print(f'{old} -> {new}')
        print(f'dry run: {len(plan)} file(s) would be renamed under {root}, {done} already named; '
              'nothing changed.')
    elif not plan:
        print(f'nothing to rename under {root}: {done} {FLAGS.filetype} image(s), all already '
              'named.')
    else:
        print(f'renamed {len(plan)} file(s) under {root} ({done} already named, left as they are); '
              f'log: {log} (undo with scripts/rename_files.py --undo {log})')


if __name__ == '__main__':
    utils.run(main)

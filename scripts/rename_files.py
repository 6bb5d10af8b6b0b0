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
  Images with no class -- anywhere under a folder named `unlabeled` (or `unlabeled`), or directly
  in --targetdir -- are numbered without a class: unlabeled/c.png -> unlabeled/2.png (their label
  is never read, and a class suffix would be a made-up one). An image directly in a `train/` or
  `test/` folder is an error: it needs a class folder. What libml/images.py passes over is left
  alone: hidden files and folders, __MACOSX, other types, anything that is not a regular file.
  The extension is kept, lower-cased (a.JPEG -> 3_cat.jpeg).

Safety
  - Nothing is overwritten, ever: an image already named `{n}_{class}` (in its class folder) or
    `{n}` (unlabeled) keeps its name and number, new numbers skip the numbers in use, and if a
    planned name is taken by any other file, the script stops before renaming anything.
    Re-running on a renamed folder therefore changes nothing; images added later get new numbers.
  - --dry_run prints the plan (`old -> new`, paths relative to --targetdir) and changes nothing.
  - Before renaming, the plan is written to `{targetdir}/rename_log-{YYYYmmdd-HHMMSS}.tsv`
    (tab-separated `old`, `new`, paths relative to the log's folder, so the folder may be moved);
    `--undo LOGFILE` renames every file back, also after an interrupted run (entries not yet done
    are skipped), and again stops before renaming anything if a file is missing or in the way.
"""
import os

from absl import flags

from libml import rename, utils
from libml.utils import UserError

flags.DEFINE_string('targetdir', None, 'The data set folder (e.g. $ML_DATA/mydataset/ holding '
                    'train/<class>/, test/<class>/, unlabeled/), or one of its split folders.')
flags.DEFINE_integer('index', 0, 'First number to give.', lower_bound=0)
flags.DEFINE_enum('filetype', 'png', ['png', 'jpg', 'jpeg'], 'Which images to rename: png, or jpg '
                  '(.jpg and .jpeg files); any case.', case_sensitive=False)
flags.DEFINE_bool('dry_run', False, 'Print the plan and change nothing.')
flags.DEFINE_string('undo', None, 'A rename_log-*.tsv written by an earlier run: rename its files '
                    'back.')

FLAGS = flags.FLAGS

def main(argv):
    utils.no_extra_args(argv, 'usage: scripts/rename_files.py --targetdir DIR [--index 0] '
                              '[--filetype png|jpg] [--dry_run] | --undo LOGFILE')
    if FLAGS.undo:
        renamed, skipped = rename.undo(FLAGS.undo)
        print(f'renamed {renamed} file(s) back as listed in {FLAGS.undo}'
              + (f' ({skipped} already had their old name)' if skipped else ''))
        return
    if not FLAGS.targetdir:
        raise UserError('--targetdir is required: the data set folder, e.g. $ML_DATA/mydataset/.')
    root = os.path.abspath(FLAGS.targetdir)
    plan, done, log = rename.rename(root, FLAGS.index, FLAGS.filetype.lower(), FLAGS.dry_run)
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

"""Renaming a custom dataset's images to `{number}_{class}.{ext}` (scripts/rename_files.py), with a
log that undoes it. The rules (which images, which names, safety) are in that script's --help.
"""
import csv
import os
import re
import time

from tqdm import tqdm

from libml import files, folders
from libml.utils import UserError


EXTENSIONS = {'png': ('.png',), 'jpg': ('.jpg', '.jpeg'), 'jpeg': ('.jpg', '.jpeg')}
UNLABELED_FOLDERS = ('unlabeled', 'unlabelled')   # both spellings are accepted as folder names
SPLIT_FOLDERS = ('train', 'test')
LOG_HEADER = ['old', 'new']


def _images(root, filetype):
    """Relative paths of the images of `filetype` under `root`, in the shared natural order."""
    return [rel.replace('/', os.sep) for rel in folders.list_images(root).images
            if os.path.splitext(rel)[1].lower() in EXTENSIONS[filetype]]


def _class_of(rel):
    """The class of the image at relative path `rel`, None if it has none."""
    parts = rel.split(os.sep)[:-1]
    if not parts or any(p.lower() in UNLABELED_FOLDERS for p in parts):
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
    with files.atomic_output(path, overwrite=False) as tmp:
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

"""Folders of images: the one place that lists them, in one order, with one rule for classes.

Dataset creation (scripts/create_datasets.py custom), renaming (scripts/rename_files.py) and
prediction (libml/predict.py) all call this module, so every tool lists a folder the same way;
libml/images.py then turns each file into model pixels.

A folder is searched recursively. An image is a regular file whose name ends in .png, .jpg or
.jpeg, in any letter case (the content, not the name, decides the decoder: a PNG named .jpg
works). Passed over, each with its reason in `Listing.skipped`:
- hidden files and folders (name starting with "."; also macOS's `._x.png` resource forks),
- `__MACOSX` folders (left by unzipping on macOS),
- `.DS_Store`, `Thumbs.db`, `desktop.ini` (any case), and any file of another extension,
- anything with an image name that is not a regular file (a FIFO, socket or device named
  x.png, a dangling link): only regular files are ever opened, so a named pipe never blocks,
- a link to a folder that is one of its own parent folders (a loop); other links are followed.
Nothing is opened while listing (names and `stat` only).
Order: the natural order of the paths relative to the folder, with "/" separators, compared
folder by folder, then file name: digit runs compare as numbers and the rest case-insensitively
(`img2.png` < `img10.png` < `Img11.png`; `cat/b.png` < `cat/deep/a.png` < `cat2/a.png`), ties
broken by the exact text. Every tool uses this order (`natural_key`).
Classes (`class_of`), in a labeled folder (create_datasets' --traindir/--testdir, inference's
class folders): an image in a sub-folder belongs to the class named by its top sub-folder
(deeper folders are part of that class: `cat/nested/a.png` is a cat); an image directly in the
folder named `{n}_{class}.ext` (as rename_files.py names them, e.g. `7_chat noir.png`) belongs to
`{class}`; any other image directly in the folder has no class. Class indices are the class
names in plain sorted order (done by the callers).
"""
import dataclasses
import os
import re

from libml.utils import UserError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')
SYSTEM_FILES = ('.ds_store', 'thumbs.db', 'desktop.ini')  # compared lower-cased
SKIPPED_FOLDERS = ('__MACOSX',)
# Reasons in Listing.skipped.
HIDDEN = 'hidden'
MACOS_FOLDER = 'macOS metadata folder'
NOT_AN_IMAGE = 'not a PNG or JPEG file'
NOT_REGULAR = 'not a regular file'

_NUMBERED_NAME = re.compile(r'\d+_(.+)')
_DIGITS = re.compile(r'(\d+)')


def natural_key(rel):
    """Sort key of a relative path with "/" separators (the order in the module doc)."""
    key = []
    for part in rel.split('/'):
        pieces = _DIGITS.split(part)  # text, digits, text, ...: same types at the same places
        key.append(([int(p) if i % 2 else p.casefold() for i, p in enumerate(pieces)], part))
    return key


@dataclasses.dataclass(frozen=True)
class Listing:
    """What `list_images` found.

    root     the folder, absolute;
    images   the image files: paths relative to root, "/" separators, natural order;
    skipped  [(relative path, reason)] of what was passed over, natural order (folders end in
             "/"; a skipped folder is not searched);
    folders  the searched sub-folders directly in root, natural order (with or without images).
    """
    root: str
    images: list
    skipped: list
    folders: list

    def path(self, rel):
        """The absolute path of relative path `rel`."""
        return os.path.join(self.root, *rel.split('/'))


def _skip_reason(entry, is_dir):
    name = entry.name
    if name.startswith('.'):
        return HIDDEN
    if is_dir:
        return MACOS_FOLDER if name in SKIPPED_FOLDERS else None
    if not name.lower().endswith(IMAGE_EXTENSIONS):  # also SYSTEM_FILES
        return NOT_AN_IMAGE
    if not entry.is_file():  # follows links; stat only, so a FIFO is never opened
        return NOT_REGULAR
    return None


def list_images(folder):
    """The images of `folder` and what was passed over (rules and order in the module doc).

    Returns a Listing. Raises UserError if `folder` is not a folder (callers usually check first,
    to name their flag).
    """
    root = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    if not os.path.isdir(root):
        raise UserError(f'{root} is not a folder.')
    images, skipped, folders = [], [], []

    def walk(path, rel, ancestors):
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError as e:
            skipped.append((rel + '/', f'cannot be listed ({e.strerror})'))
            return
        for entry in entries:
            child = f'{rel}/{entry.name}' if rel else entry.name
            is_dir = entry.is_dir()  # follows links
            reason = _skip_reason(entry, is_dir)
            if is_dir and reason is None:
                st = entry.stat()
                if (st.st_dev, st.st_ino) in ancestors:
                    reason = 'link to one of its parent folders (a loop)'
            if reason:
                skipped.append((child + '/' if is_dir else child, reason))
            elif is_dir:
                if not rel:
                    folders.append(child)
                walk(entry.path, child, ancestors | {(st.st_dev, st.st_ino)})
            else:
                images.append(child)

    st = os.stat(root)
    walk(root, '', frozenset({(st.st_dev, st.st_ino)}))
    images.sort(key=natural_key)
    skipped.sort(key=lambda item: natural_key(item[0]))
    folders.sort(key=natural_key)
    return Listing(root, images, skipped, folders)


def class_of(rel, numbered_names=True):
    """The class name of image `rel` (relative to a labeled folder), or None: its top sub-folder,
    else (numbered_names) the `{class}` of a file named `{n}_{class}.ext` directly in the folder."""
    top, sep, _ = rel.partition('/')
    if sep:
        return top
    match = _NUMBERED_NAME.fullmatch(os.path.splitext(rel)[0]) if numbered_names else None
    return match.group(1) if match else None



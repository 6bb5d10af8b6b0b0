"""custom, step 2: the user's images, probed, decoded and written.

Reads the images custom_folders.plan lists, through libml/images.py (the project's one decoder, also
used by inference, so a file gives the model the same pixels in training and in prediction):
headers first (size, channels; an image above --max_image_pixels is refused before any pixel is
decoded), then pixels, decoded in parallel ahead of the writer. Channels: 1 if every image is
grey, else 3. Every image must have one size, or all are resized to --img_size.
Writes {name}-train, {name}-test and, with --unlabeldir, {name}-unlabeled (label -1), all of them
or none, and {name}_class_mappings.json. Images that cannot be decoded are an error that lists
them, or are left out (skip_bad_images). Without --unlabeldir, a {name}-unlabeled file of an
earlier run is removed: create_split would pick it up.
"""
import collections
import contextlib
import os

import numpy as np
from absl import logging
from tqdm import tqdm

from libml import images, names, records
from libml.sources import custom_folders, output
from libml.sources.custom_folders import some
from libml.utils import UserError


def create_custom(root, name, traindir, testdir, unlabeldir=None, img_size=None,
                  skip_bad_images=False, max_image_pixels=images.MAX_IMAGE_PIXELS):
    """Writes {name}-train/test(/unlabeled) from folders of images: all of them or none."""
    names.check_name(name)
    class_names, parts = custom_folders.plan(traindir, testdir, unlabeldir)
    good, bad = probe_all([p for items in parts.values() for p, _ in items], max_image_pixels,
                          skip_bad_images)
    size, channels = common_format(good, img_size)
    writers = {}
    with contextlib.ExitStack() as stack:  # all files are kept, or none
        for part, items in parts.items():
            writers[part] = stack.enter_context(records.RecordWriter(
                names.record_path(name, part, root), (size[1], size[0], channels),
                class_names=class_names))
            items = [item for item in items if item[0] in good]
            output.fill(writers[part], decode_chunks(items, size, channels, bad,
                                                     max_image_pixels), len(items))
        _check_bad(bad, skip_bad_images)
        _check_counts(writers, class_names)
    lines = [output.records_line(w.path, w.count) for w in writers.values()]
    if not unlabeldir:
        lines += _remove_stale_unlabeled(name, root)
    return lines + [output.write_mapping(name, class_names, root)]


def probe_all(paths, max_pixels, skip_too_large=False):
    """Reads every image's header, in parallel: ({path: ImageInfo} of the readable ones,
    [(path, reason)] of the others).

    An image above `max_pixels` is an error at once, before anything is decoded, unless
    `skip_too_large` (then it is one of the others).
    """
    bar = lambda results: tqdm(results, total=len(paths), desc='checking images', unit='img',
                               leave=False)
    good, bad, large = {}, [], []
    for path, info in zip(paths, images.probe_all(paths, max_pixels, progress=bar)):
        if isinstance(info, images.ImageTooLarge):
            large.append((path, str(info)))
        elif isinstance(info, images.ImageError):
            bad.append((path, str(info)))
        else:
            good[path] = info
    if large and not skip_too_large:
        raise UserError(f'{len(large)} image(s) are too large: '
                        f'{some(f"{p} ({r})" for p, r in large)}; pass a larger '
                        '--max_image_pixels, or --skip_bad_images to leave them out.')
    bad += large
    if not good:
        raise UserError(f'none of the {len(paths)} images can be read, e.g. {bad[0][0]} '
                        f'({bad[0][1]}).')
    return good, bad


def common_format(probes, img_size):
    """(size, channels) every image is converted to; errors name two files of different sizes.

    probes: {path: images.ImageInfo}. Channels: 1 if every image is grey, else 3.
    """
    sizes = collections.defaultdict(list)
    for path, info in probes.items():
        sizes[info.width, info.height].append(path)
    channels = 1 if all(info.grey for info in probes.values()) else 3
    if img_size:
        return (img_size, img_size), channels
    if len(sizes) > 1:
        (a, a_paths), (b, b_paths) = sorted(sizes.items(), key=lambda kv: -len(kv[1]))[:2]
        raise UserError(f'images have different sizes: {a_paths[0]} is {a[0]}x{a[1]}, '
                        f'{b_paths[0]} is {b[0]}x{b[1]}; pass --img_size=S to resize all to SxS.')
    return next(iter(sizes)), channels


def decode_chunks(items, size, channels, bad, max_pixels=images.MAX_IMAGE_PIXELS):
    """Streams (images uint8 [n, H, W, C], labels [n]) of `items` [(path, label)], CHUNK at a
    time, decoded in parallel ahead of the writer; unreadable ones go to `bad`."""
    paths = [path for path, _ in items]
    labels = np.array([label for _, label in items], np.int64)
    ds, failures = images.pixel_dataset(paths, size[1], size[0], channels, max_pixels)
    for rows, pixels in ds.batch(output.CHUNK).as_numpy_iterator():
        yield pixels, labels[rows]
    bad += [(paths[row], reason) for row, reason in sorted(failures.items())]


def _check_bad(bad, skip):
    """Undecodable images: an error listing them, or (skip) a warning saying how many."""
    if not bad:
        return
    shown = 10
    if skip or len(bad) > shown:  # the error message lists only the first ones
        for path, reason in bad:
            logging.warning('cannot decode %s (%s)', path, reason)
    if not skip:
        listing = some([f'{p} ({r})' for p, r in bad], limit=shown)
        raise UserError(f'{len(bad)} image(s) cannot be decoded: {listing}; fix or remove them, '
                        'or pass --skip_bad_images to leave them out.')
    logging.warning('skipped %d image(s) that cannot be decoded (--skip_bad_images).', len(bad))


def _check_counts(writers, class_names):
    """After skipping bad images, every labeled part must still have images."""
    for part in ('train', 'test'):
        if not writers[part].count:
            raise UserError(f'no readable {part} images are left.')
        lacking = [c for i, c in enumerate(class_names) if not writers[part].label_counts.get(i)]
        if lacking:
            logging.warning('%s: no readable images left of class(es) %s', part, some(lacking))


def _remove_stale_unlabeled(name, root):
    """A {name}-unlabeled file left by an earlier run would be picked up by create_split."""
    path = names.record_path(name, 'unlabeled', root)
    if not os.path.exists(path):
        return []
    for stale in (path, names.meta_path(path)):
        if os.path.exists(stale):
            os.remove(stale)
    logging.warning('removed %s from an earlier run: this run has no --unlabeldir.', path)
    return [f'removed {path} (no --unlabeldir this time)']

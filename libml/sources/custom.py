"""custom, step 2: the user's images, each read and decoded once, and written.

Decodes the images custom_folders.plan lists through libml/images.py (the project's one decoder,
also used by inference, so a file gives the model the same pixels in training and in prediction)
in worker processes, one per core, which also encode the records' PNGs (records.encode_pngs: the
bytes TensorFlow's encoder writes). Neither needs TensorFlow, which this process loads meanwhile
to write the records, in order. An image above --max_image_pixels is refused from its header,
before its pixels are decoded. Channels: 1 if every image is grey, else 3. Every image must have
one size, or all are resized to --img_size (TensorFlow's resize: the workers load it then).
Writes {name}-train, {name}-test and, with --unlabeldir, {name}-unlabeled (label -1), all of them
or none, and {name}_class_mappings.json. Images that cannot be decoded are an error that lists
them, or are left out (skip_bad_images). Without --unlabeldir, a {name}-unlabeled file of an
earlier run is removed: create_split would pick it up.

The workers must know the channel count before the last image is read: it is guessed from the
first images, decoded here until one is in colour or GUESS_GREY are grey. A colour image after
an all-grey start makes everything be read again with 3 channels (the one case of a file read
twice).
"""
import collections
import concurrent.futures
import contextlib
import ctypes
import itertools
import multiprocessing
import os
import signal

import numpy as np
from absl import logging
from tqdm import tqdm

from libml import images, names, records
from libml.sources import custom_folders, output
from libml.sources.custom_folders import some
from libml.utils import UserError, check_interrupted

# Images per task of a worker (fewer when large: TASK_BYTES of pixels at most). The workers run
# up to BUFFER bytes of encoded images ahead of the writer: enough to keep them busy while this
# process loads TensorFlow (seconds), and a bound on memory. Read at call time, so tests can
# change them.
CHUNK = 64
TASK_BYTES = 4 << 20
BUFFER = 64 << 20
PARALLEL_FROM = 1000  # fewer images are read in this process: starting workers takes ~1 s
GUESS_GREY = 64  # grey images read first, at most, before the channels are guessed to be 1
GUESS_BYTES = 64 << 20  # ... or this many bytes of them


class _ColourAfterGrey(Exception):
    """A colour image after the first images were all grey: write again with 3 channels."""


def create_custom(root, name, traindir, testdir, unlabeldir=None, img_size=None,
                  skip_bad_images=False, max_image_pixels=images.MAX_IMAGE_PIXELS):
    """Writes {name}-train/test(/unlabeled) from folders of images: all of them or none."""
    names.check_name(name)
    class_names, parts = custom_folders.plan(traindir, testdir, unlabeldir)
    args = root, name, class_names, parts, img_size, skip_bad_images, max_image_pixels
    with _workers(sum(map(len, parts.values()))) as pool:
        try:
            writers = _write(pool, *args)
        except _ColourAfterGrey as e:
            logging.warning('%s: reading every image again, with 3 channels.', e)
            writers = _write(pool, *args, channels=3)
    lines = [output.records_line(w.path, w.count) for w in writers.values()]
    if not unlabeldir:
        lines += _remove_stale_unlabeled(name, root)
    return lines + [output.write_mapping(name, class_names, root)]


def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()


@contextlib.contextmanager
def _workers(count):
    """A pool of one worker process per core; None (read in this process) for few images."""
    if count < PARALLEL_FROM or _cores() < 2:
        yield None
        return
    # spawn: fresh interpreters that import only what the tasks need (no TensorFlow), the same
    # on every platform; forking this process once TensorFlow runs threads in it is not safe.
    pool = concurrent.futures.ProcessPoolExecutor(
        _cores(), mp_context=multiprocessing.get_context('spawn'), initializer=_start_worker)
    try:
        yield pool
    finally:
        pool.shutdown(cancel_futures=True)


def _start_worker():
    # Ctrl-C reaches every process of the terminal: the main process stops, then the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Each PNG's deflate state (memLevel 9: two 128 KiB tables, one cleared) is a fresh mapping
    # that glibc unmaps or trims right after: ~20 page faults per image, a sixth of a worker's
    # time. Raised thresholds (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD) keep the memory for the next.
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 32 << 20)
        libc.mallopt(-1, 256 << 20)


def _write(pool, root, name, class_names, parts, img_size, skip, max_pixels, channels=None):
    """Reads, checks and writes every image; returns the RecordWriters (their files in place).

    Once the run is bound to fail (an image that cannot be used without --skip_bad_images,
    images of two sizes without --img_size), nothing more is written: the other images are only
    read for what the error says (_check).
    """
    items = [item for part_items in parts.values() for item in part_items]
    channels, results = _read(items, pool, img_size, max_pixels, channels)
    sizes = {}  # (width, height) -> [count, first path], in the order met
    bad, large = [], []
    writers = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.closing(results))

        def writer(part):  # the first one loads TensorFlow, while the workers decode
            if part not in writers:
                width, height = (img_size, img_size) if img_size else next(iter(sizes))
                writers[part] = stack.enter_context(records.RecordWriter(
                    names.record_path(name, part, root), (height, width, channels),
                    class_names=class_names))
            return writers[part]

        for part, part_items in parts.items():
            desc = os.path.basename(names.record_path(name, part, root))
            with tqdm(total=len(part_items), desc=desc, unit='img', leave=False) as bar:
                for (path, label), result in zip(part_items, results):
                    bar.update()
                    if isinstance(result, images.ImageError):
                        bad.append((path, str(result)))
                        if isinstance(result, images.ImageTooLarge):
                            large.append(bad[-1])
                        continue
                    width, height, record = result
                    sizes.setdefault((width, height), [0, path])[0] += 1
                    if (bad and not skip) or (not img_size and len(sizes) > 1):
                        continue  # bound to fail
                    if record is None:  # not of another size (just checked): a colour image
                        raise _ColourAfterGrey(f'{path} is in colour, the images before it grey')
                    writer(part).write_serialized(record, label)
        _check(len(items), sizes, bad, large, img_size, skip)
        _check_counts(writers, class_names)
        for part in parts:  # a part without readable images (unlabeled) gets an empty file
            writer(part)
    return {part: writers[part] for part in parts}


def _check(count, sizes, bad, large, img_size, skip):
    """The errors of a run, first one first: images too large (unless skip), none readable,
    two sizes (without img_size), images that cannot be decoded (unless skip: a warning).

    sizes: {(width, height): [images, first path]} of the readable images, in the order met;
    bad: [(path, reason)] of the others, large: those of them above the pixel limit."""
    if large and not skip:
        raise UserError(f'{len(large)} image(s) are too large: '
                        f'{some(f"{p} ({r})" for p, r in large)}; pass a larger '
                        '--max_image_pixels, or --skip_bad_images to leave them out.')
    if not sizes:
        raise UserError(f'none of the {count} images can be read, e.g. {bad[0][0]} '
                        f'({bad[0][1]}).')
    if not img_size and len(sizes) > 1:
        (a, (_, a_path)), (b, (_, b_path)) = sorted(sizes.items(), key=lambda kv: -kv[1][0])[:2]
        raise UserError(f'images have different sizes: {a_path} is {a[0]}x{a[1]}, {b_path} is '
                        f'{b[0]}x{b[1]}; pass --img_size=S to resize all to SxS.')
    _check_bad(bad, skip)


def _read(items, pool, img_size, max_pixels, channels=None):
    """(channels, iterator): for each (path, label) of `items`, in order, (width, height, record)
    or the ImageError saying why the file cannot be used. The record (a serialized Example of the
    model pixels) is None for an image of another size without img_size, or in colour when
    channels is 1. channels None: guessed from the first images, decoded here."""
    first, grey_bytes = [], 0
    for path, _ in items:  # until an image tells the size (and the channels, unless given)
        first.append(_decode(path, max_pixels))
        if isinstance(first[-1], images.ImageError):
            continue
        info, pixels = first[-1]
        grey_bytes += pixels.nbytes
        if channels or not info.grey or len(first) >= GUESS_GREY or grey_bytes >= GUESS_BYTES:
            break
    decoded = [d for d in first if not isinstance(d, images.ImageError)]
    if channels is None:
        channels = 1 if all(info.grey for info, _ in decoded) else 3
    size = ((img_size, img_size) if img_size else
            (decoded[0][0].width, decoded[0][0].height) if decoded else None)
    image_bytes = size[0] * size[1] * channels if size else 1  # no size: no image left
    per_task = max(1, min(CHUNK, TASK_BYTES // image_bytes))
    rest = items[len(first):]
    tasks = [(rest[i:i + per_task], size, bool(img_size), channels, max_pixels)
             for i in range(0, len(rest), per_task)]
    remaining = iter(tasks)
    pending = collections.deque()
    if pool:  # submitted now: the workers start while this process converts the first images
        ahead = max(2 * _cores(), BUFFER // (per_task * image_bytes))
        pending.extend(pool.submit(_process, *task) for task in itertools.islice(remaining, ahead))
    head = _encode([_to_model(d, size, bool(img_size), channels) for d in first],
                   [label for _, label in items[:len(first)]])

    def results():
        try:
            yield from head
            if not pool:
                for task in remaining:
                    check_interrupted()
                    yield from _process(*task)
            while pending:
                chunk = pending.popleft().result()
                pending.extend(pool.submit(_process, *t) for t in itertools.islice(remaining, 1))
                check_interrupted()
                yield from chunk
        finally:
            for future in pending:
                future.cancel()
    return channels, results()


def _process(items, size, resize, channels, max_pixels):
    """A worker's task: _read's results for `items` [(path, label)]. Each image becomes model
    pixels as soon as it is decoded, so no large photo is kept."""
    return _encode([_to_model(_decode(path, max_pixels), size, resize, channels)
                    for path, _ in items], [label for _, label in items])


def _decode(path, max_pixels):
    """(ImageInfo, decoded pixels), or the ImageError saying why `path` cannot be used."""
    try:
        pixels = images.decode_file(path, max_pixels)
    except images.ImageError as e:
        return e
    return images.ImageInfo(pixels.shape[1], pixels.shape[0], pixels.shape[2]), pixels


def _to_model(decoded, size, resize, channels):
    """_decode's (info, pixels) -> (info, model pixels [height, width, channels] or None: see
    _read); an ImageError is passed on."""
    if isinstance(decoded, images.ImageError):
        return decoded
    info, pixels = decoded
    if channels == 1 and not info.grey:
        return info, None
    if size and (info.width, info.height) != size:
        if not resize:
            return info, None
        # The one resize filter, in TensorFlow: loaded in this process at its first use.
        return info, images.to_model_pixels(pixels, size[1], size[0], channels).numpy()
    return info, images.to_model_channels(pixels, channels)


def _encode(converted, labels):
    """_to_model's results and their labels -> (width, height, record or None), errors kept.
    Images of one shape are PNG-encoded together (the filters run on all of them at once)."""
    out = [r if isinstance(r, images.ImageError) else (r[0].width, r[0].height, None)
           for r in converted]
    by_shape = collections.defaultdict(list)
    for i, r in enumerate(converted):
        if not isinstance(r, images.ImageError) and r[1] is not None:
            by_shape[r[1].shape].append(i)
    for rows in by_shape.values():
        pngs = records.encode_pngs(np.stack([converted[i][1] for i in rows]))
        for i, png in zip(rows, pngs):
            out[i] = out[i][:2] + (records.make_example(png, labels[i]),)
    return out


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
        if part not in writers:
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

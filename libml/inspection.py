"""Know a dataset before training on it (scripts/inspect_data.py): exact and near duplicates
within and between its parts, leaks of test or validation images into training, class balance,
and, with a trained run, the class distribution and out-of-distribution share of the unlabeled
pool.

Parts (libml/datasets.py resolves the name): labeled, unlabeled (the training part of the
unlabeled file, without the validation records), validation, test. Of an `_aug` dataset only the
original unlabeled images are inspected: its copies derive from them (a leak's copies are leaks).

Exact duplicates: equal pixels, found by a 64-bit fingerprint of the decoded pixels
(tf.fingerprint; a chance collision among 1,000,000 images has probability about 3e-8).

Near duplicates: the same photo shifted, cropped or rescaled a little, colour- or
contrast-changed, or JPEG re-encoded. Two stages, because no single cheap vector told such copies
from different photos of similar layout (a ship on the sea, a plane in the sky):
  1. Candidates: every image's nearest image in every part, by the cosine similarity of 8x8 grey
     thumbnails (antialiased, mean removed, unit norm), found blockwise: a block of 1024 queries
     against 16384 references at a time (64 MB), keeping only the best per part.
  2. Verification of each candidate pair at up to 32x32 pixels (larger images are resized, smaller
     ones kept): grey, band-pass filtered (difference of Gaussians, sigma 0.7 and 2.5 pixels at
     32x32, scaled with the size), then the normalised cross-correlation of one image's centre
     with the other, maximised over shifts of up to 3/32 of the size in whole pixels (3 at
     32x32, none below 11x11) and over a 12% zoom either way (computed by FFT). The band-pass
     is what separates copies from look-alikes: on plain intensities, different photos of
     similar layout correlate as well as copies do.
  distance = 1 - that correlation; a near duplicate is a pair at distance <= NEAR_THRESHOLD
  (0.15 at 32x32, see below for smaller images), or an exact duplicate (distance 0).

How the threshold was chosen (CIFAR-10 JPEG copy, 10,000 test against 50,000 training images;
README, "Inspect a dataset"): copies planted by transforming 500 real test images (shifts of 1-3
pixels, 12% crops, off-centre crops and zoom-outs, brightness, contrast, saturation and hue
changes, JPEG quality 30, a combination) verify at distance <= 0.055 in 95% of cases for every
transformation, while different photos by construction (the four nearest training images of
another class, for 2,000 test images) come closer than 0.215 in only 0.1% of cases: 0.15 lies
between. By eye, 47 of 48 CIFAR test images flagged at random have the same photo in training.
Images smaller than 32x32 hold less to compare: two 8x8 digits of the same class by different
writers are within 0.15 for half the test images of `digits` (none of another class), so the
default threshold shrinks in proportion to the size (0.0375 at 8x8). Weak points, measured: a
copy must first be the nearest thumbnail, which fails for most shifts of 3 pixels (at 32x32) and
half the off-centre crops; mirrored copies are not looked for.

Memory: per image a 64-float thumbnail, its grey image of up to 32x32 bytes, a fingerprint and a
few numbers, about 1.3 kB, held once (plus one copy of the largest array while parts are joined):
1,000,000 unlabeled images need about 2.5 GB at the peak, plus TensorFlow (about 0.6 GB), 64 MB per
search thread and about 100 MB per verification thread; never an all-pairs matrix. Time grows
with the square of the image count (every image is compared with every other): `leaks_only`
compares the test and validation images with all the others and skips the pairs within training.
"""
import concurrent.futures
import dataclasses
import os
import time

import numpy as np
import scipy.fft
from tqdm import tqdm

from libml import datasets, files, names, records, runs, splits
from libml.utils import UserError, check_interrupted

PARTS = ('labeled', 'unlabeled', 'valid', 'test')
PART_NAMES = {'labeled': 'labeled', 'unlabeled': 'unlabeled', 'valid': 'validation',
              'test': 'test'}
TRAINING = ('labeled', 'unlabeled')
# Leaks: (image part, training-side part) pairs, the most harmful first.
LEAKS = (('test', 'labeled'), ('test', 'unlabeled'), ('test', 'valid'),
         ('valid', 'labeled'), ('valid', 'unlabeled'))

NEAR_THRESHOLD = 0.15   # distance = 1 - aligned band-pass correlation, at 32x32 (docstring)
THUMB = 8               # candidate thumbnails: THUMB x THUMB grey
ALIGN_SIZE = 32         # verification at up to this many pixels a side
QUERY_BLOCK, REF_CHUNK = 1024, 16384
PAIR_BATCH = 2048
# --run: the confidence threshold below which an unlabeled image is flagged out of distribution
# keeps this share of the (in-distribution) validation images below it: the usual 95%-true-
# positive operating point of out-of-distribution detection (Liang et al., 2018, "ODIN").
VALID_QUANTILE = 0.05


# ----------------------------------------------------------------------------------------------
# Names.

def resolve_name(name):
    """The Dataset of `name`: any name the trainers accept (`name.seed@size-valid`, the baselines'
    `name-valid`), or without the validation part (`name.seed@size`, `name`: -0)."""
    text = name if '-' in (name or '') else f'{name}-0'
    supervised = None if '@' in text else (None, None)
    try:
        if supervised is None:
            names.parse_ssl_name(text)
        else:
            names.parse_supervised_name(text)
    except UserError:
        raise UserError(f'DATASET={name!r} is not a dataset name: give NAME.SEED@SIZE-VALID (e.g. '
                        'cifar10.3@250-5000), NAME.SEED@SIZE, or the baselines\' NAME-VALID or '
                        'NAME; NAME holds letters, digits and "_".') from None
    return datasets.resolve(text, supervised)


# ----------------------------------------------------------------------------------------------
# Reading: every file once; per record a thumbnail, a small grey image and a fingerprint.

@dataclasses.dataclass
class Part:
    """The records of one part: `positions` in `path`, labels, fingerprints, thumbnails [n, 64],
    grey images [n, S, S] uint8; with a run, the model's confidence and class of each record."""
    name: str
    path: str
    positions: np.ndarray
    labels: np.ndarray
    digests: np.ndarray
    thumbs: np.ndarray
    grey: np.ndarray
    confidence: np.ndarray = None
    predicted: np.ndarray = None

    def __len__(self):
        return len(self.positions)


def align_size(shape):
    return int(min(ALIGN_SIZE, max(shape[0], shape[1], 8)))


def _features(shape, size):
    """A tf.function: uint8 images [B, H, W, C] -> thumbnails [B, 64], grey [B, S, S] uint8,
    fingerprints [B, 8] uint8."""
    import tensorflow as tf

    def compute(images):
        x = tf.cast(images, tf.float32)
        grey = tf.image.rgb_to_grayscale(x) if shape[2] == 3 else x[..., :1]
        thumbs = tf.reshape(tf.image.resize(grey, (THUMB, THUMB), antialias=True), [-1, THUMB ** 2])
        thumbs -= tf.reduce_mean(thumbs, 1, keepdims=True)
        thumbs = tf.math.divide_no_nan(thumbs, tf.norm(thumbs, axis=1, keepdims=True))
        if (shape[0], shape[1]) != (size, size):
            grey = tf.image.resize(grey, (size, size), antialias=True)
        grey = tf.cast(tf.round(tf.clip_by_value(grey[..., 0], 0, 255)), tf.uint8)
        return thumbs, grey, tf.fingerprint(images)
    return tf.function(compute, autograph=False)


def _file_batches(path, shape, batch=512):
    """Batches of a record file: position, origin (the `source` feature, else the position),
    label, decoded image."""
    import tensorflow as tf

    def parse(position, raw):
        r = records.parse_records(raw)
        return {'position': position, 'label': r['label'], 'png': r['image'],
                'origin': tf.where(r['source'] >= 0, r['source'], position)}

    def decode(r):
        image = tf.ensure_shape(tf.io.decode_png(r.pop('png'), channels=shape[2]), shape)
        return dict(r, image=image)

    ds = tf.data.TFRecordDataset(path, buffer_size=8 << 20).enumerate().batch(1024)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
    return ds.prefetch(2).as_numpy_iterator()


def _in_part(part, batch):
    """Which records of a batch belong to `part` (a datasets.Part) and are inspected: originals
    only (an _aug copy has an origin other than its position)."""
    keep = batch['origin'] == batch['position']
    if part.stop is not None:
        keep &= batch['position'] < part.stop
    if part.exclude_below:
        keep &= batch['origin'] >= part.exclude_below
    if part.labeled_only:
        keep &= batch['label'] >= 0
    return keep


def read_parts(dataset, predict=None, progress=True):
    """{part name: Part} of `dataset` (a datasets.Dataset), each file read once.

    predict: None, or a function uint8 images [B, H, W, C] -> probabilities [B, nclass], applied to
    the unlabeled and validation records (libml/predict.py's probability_function of a run).
    """
    from libml import pipeline  # TensorFlow
    wanted = {p: getattr(dataset, p) for p in PARTS if getattr(dataset, p) is not None}
    by_path = {}
    for name, part in wanted.items():
        by_path.setdefault(part.path, []).append(name)
    size = align_size(dataset.shape)
    features = _features(dataset.shape, size)
    collected = {name: [] for name in wanted}
    total = sum(wanted[ps[0]].count for ps in by_path.values())
    with tqdm(total=total, unit='img', desc='reading', disable=not progress,
              dynamic_ncols=True) as bar:
        for path, part_names in by_path.items():
            with pipeline.dataset_errors(path):
                for batch in _file_batches(path, dataset.shape):
                    check_interrupted()
                    thumbs, grey, digests = (t.numpy() for t in features(batch['image']))
                    digests = digests.view('<u8')[:, 0]
                    for name in part_names:
                        keep = _in_part(wanted[name], batch)
                        if not keep.any():
                            continue
                        rows = {'positions': batch['position'][keep],
                                'labels': batch['label'][keep], 'digests': digests[keep],
                                'thumbs': thumbs[keep], 'grey': grey[keep]}
                        if predict is not None and name in ('unlabeled', 'valid'):
                            probs = predict(batch['image'][keep])
                            rows['confidence'] = probs.max(1)
                            rows['predicted'] = probs.argmax(1)
                        collected[name].append(rows)
                    bar.update(len(batch['position']))
    parts = {}
    for name, chunks in collected.items():
        if not chunks:
            raise UserError(f'the {PART_NAMES[name]} part of {dataset.name} is empty (no record of '
                            f'{wanted[name].path} belongs to it); ' + _empty_hint(name))
        # Field by field, each chunk freed once copied: at most one field is held twice.
        merged = {k: np.concatenate([c.pop(k) for c in chunks]) for k in list(chunks[0])}
        parts[name] = Part(name=name, path=wanted[name].path, **merged)
    return parts


def _empty_hint(part):
    return {'valid': 'use a larger -VALID (a _mismatch dataset validates on its labeled records '
                     'only) or none.',
            'unlabeled': 'use a smaller -VALID.'}.get(part, 'create the file again.')


# ----------------------------------------------------------------------------------------------
# Stage 1: candidates, the nearest thumbnail of every image in every part (blockwise).

def _parallel(function, items):
    """function(item) for every item, in order, on every core; BLAS kept to one thread per
    worker (OpenBLAS's own threads slow small products down several times on a busy machine)."""
    from threadpoolctl import threadpool_limits
    workers = max(1, len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
                  else os.cpu_count() or 1)
    with threadpool_limits(1), concurrent.futures.ThreadPoolExecutor(workers) as pool:
        yield from pool.map(function, items)


def nearest_candidates(thumbs, bounds, pairs, progress=True):
    """For every row i of `thumbs` [N, D] (unit vectors) and every part p (rows bounds[p] =
    (start, stop)): the row j != i of part p with the highest cosine similarity.

    pairs: the (query part, reference part) indices to search; others are left at -1.
    Returns (similarity float32 [N, P], row int64 [N, P]); -inf and -1 where not searched.
    """
    n, nparts = len(thumbs), len(bounds)
    best = np.full((n, nparts), -np.inf, np.float32)
    index = np.full((n, nparts), -1, np.int64)
    tasks = [(q0, min(q0 + QUERY_BLOCK, hi), p) for qp, (lo, hi) in enumerate(bounds)
             for q0 in range(lo, hi, QUERY_BLOCK) for p in range(nparts) if (qp, p) in pairs]

    def search(task):
        q0, q1, p = task
        query = thumbs[q0:q1]
        top = np.full(q1 - q0, -np.inf, np.float32)
        arg = np.full(q1 - q0, -1, np.int64)
        lo, hi = bounds[p]
        for c0 in range(lo, hi, REF_CHUNK):
            c1 = min(c0 + REF_CHUNK, hi)
            sim = query @ thumbs[c0:c1].T
            mine = np.arange(max(q0, c0), min(q1, c1))  # an image is not its own neighbour
            sim[mine - q0, mine - c0] = -np.inf
            j = sim.argmax(1)
            value = sim[np.arange(len(j)), j]
            better = value > top
            top[better], arg[better] = value[better], j[better] + c0
        return task, top, arg

    with tqdm(total=sum(t[1] - t[0] for t in tasks), unit='img', desc='searching',
              disable=not progress, dynamic_ncols=True) as bar:
        for (q0, q1, p), top, arg in _parallel(search, tasks):
            check_interrupted()
            best[q0:q1, p], index[q0:q1, p] = top, arg
            bar.update(q1 - q0)
    return best, index


# ----------------------------------------------------------------------------------------------
# Stage 2: verification by aligned band-pass correlation.

def _gaussian_matrix(n, sigma):
    """[n, n]: a Gaussian blur of a length-n signal, edges clamped (identity for tiny sigma)."""
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / max(sigma, 1e-6)) ** 2)
    taps /= taps.sum()
    matrix = np.zeros((n, n))
    for offset, weight in zip(range(-radius, radius + 1), taps):
        np.add.at(matrix, (np.arange(n), np.clip(np.arange(n) + offset, 0, n - 1)), weight)
    return matrix


def _zoom_matrix(n, factor):
    """[n, n]: the centre 1/factor of a length-n signal stretched to n samples (linear)."""
    where = (n - n / factor) / 2 + (np.arange(n) + 0.5) / factor - 0.5
    low = np.floor(where).astype(int)
    frac = where - low
    matrix = np.zeros((n, n))
    np.add.at(matrix, (np.arange(n), np.clip(low, 0, n - 1)), 1 - frac)
    np.add.at(matrix, (np.arange(n), np.clip(low + 1, 0, n - 1)), frac)
    return matrix


def _both_axes(matrix, images):
    """matrix @ image @ matrix.T for each image [B, n, n], as two large matrix products."""
    b, n, _ = images.shape
    m = matrix.shape[0]
    rows = (images.reshape(b * n, n) @ matrix.T).reshape(b, n, m).transpose(0, 2, 1)
    return (rows.reshape(b * m, n) @ matrix.T).reshape(b, m, m).transpose(0, 2, 1)


class Aligner:
    """The verification of stage 2 for images of `size` x `size` (module docstring).

    For a zoom z in (1, ZOOM), an image is band-passed (after zooming); its centre window
    (size - 2r) is the query, its whole band-passed image the target. The correlation of a query
    with a target at each shift is computed by FFT (the shifts needed never wrap around), and
    normalised by the target window's norm (box sums, as matrix products).
    """
    ZOOM = 1.12

    def __init__(self, size):
        self.n = size
        self.r = int(3 * size // 32)
        self.h = size - 2 * self.r
        scale = size / 32
        blur = [_gaussian_matrix(size, s * scale) for s in (0.7, 2.5)]
        zoom = _zoom_matrix(size, self.ZOOM)
        self.filters = [[b.astype(np.float32) for b in blur],
                        [(b @ zoom).astype(np.float32) for b in blur]]
        box = np.zeros((2 * self.r + 1, size), np.float32)
        for s in range(2 * self.r + 1):
            box[s, s:s + self.h] = 1
        self.box = box

    def _prepare(self, grey):
        """uint8 [B, n, n] -> (query spectrum, [(target spectrum, window norms)] for zoom 1 and
        ZOOM)."""
        x = grey.astype(np.float32)
        targets, query = [], None
        for k, (narrow, wide) in enumerate(self.filters):
            y = _both_axes(narrow, x) - _both_axes(wide, x)
            sums = _both_axes(self.box, y)
            norms = np.sqrt(np.maximum(_both_axes(self.box, y * y) - sums * sums / self.h ** 2,
                                       1e-6))
            targets.append((scipy.fft.rfft2(y, workers=1), norms))
            if k == 0:
                r, h = self.r, self.h
                q = y[:, r:r + h, r:r + h]
                q = q - q.mean((1, 2), keepdims=True)
                q /= np.maximum(np.sqrt((q * q).sum((1, 2), keepdims=True)), 1e-6)
                padded = np.zeros_like(y)
                padded[:, :h, :h] = q
                query = np.conj(scipy.fft.rfft2(padded, workers=1))
        return query, targets

    def _correlate(self, query, target):
        spectrum, norms = target
        c = scipy.fft.irfft2(query * spectrum, s=(self.n, self.n), workers=1)
        c = c[:, :2 * self.r + 1, :2 * self.r + 1] / norms
        return c.reshape(len(c), -1).max(1)

    def similarity(self, grey, a, b):
        """Aligned band-pass correlations of the pairs (grey[a[k]], grey[b[k]]), [K] float32."""
        ids, where = np.unique(np.concatenate([a, b]), return_inverse=True)
        query, targets = self._prepare(grey[ids])
        ia, ib = where[:len(a)], where[len(a):]
        pick = lambda t, i: (t[0][i], t[1][i])
        best = self._correlate(query[ia], pick(targets[0], ib))
        best = np.maximum(best, self._correlate(query[ia], pick(targets[1], ib)))
        return np.maximum(best, self._correlate(query[ib], pick(targets[1], ia)))


def verify(grey, a, b, progress=True):
    """1 - aligned band-pass correlation of the pairs (a[k], b[k]) of rows of `grey` [N, n, n]."""
    aligner = Aligner(grey.shape[1])
    starts = range(0, len(a), PAIR_BATCH)
    out = np.empty(len(a), np.float32)
    with tqdm(total=len(a), unit='pair', desc='verifying', disable=not progress,
              dynamic_ncols=True) as bar:
        work = lambda s: aligner.similarity(grey, a[s:s + PAIR_BATCH], b[s:s + PAIR_BATCH])
        for s, sim in zip(starts, _parallel(work, starts)):
            check_interrupted()
            out[s:s + PAIR_BATCH] = 1 - sim
            bar.update(len(sim))
    return out


# ----------------------------------------------------------------------------------------------
# Duplicates of every image in every part.

@dataclasses.dataclass
class Duplicates:
    """For all images (parts concatenated in `order`, rows bounds[p]): per part p, the nearest
    image `other[i, p]` (-1: not searched), its `distance` (nan: not verified) and whether it is
    an `exact` copy. `searched`: the (part, part) names whose pairs were searched."""
    order: list
    bounds: list
    other: np.ndarray
    distance: np.ndarray
    exact: np.ndarray
    threshold: float
    searched: set

    def near(self):
        return self.exact | (self.distance <= self.threshold)

    def rows(self, part):
        lo, hi = self.bounds[self.order.index(part)]
        return slice(lo, hi)


def near_threshold(size):
    """The default near-duplicate distance for verification images of `size` pixels a side:
    NEAR_THRESHOLD at 32 and above, proportionally less below (module docstring)."""
    return NEAR_THRESHOLD * min(size, ALIGN_SIZE) / ALIGN_SIZE


def find_duplicates(parts, threshold=None, leaks_only=False, progress=True):
    """Duplicates of every image of `parts` ({name: Part}) in every part (module docstring).

    threshold: the near-duplicate distance (None: near_threshold of the image size).
    leaks_only: search only pairs that involve a test or validation image.
    """
    order = [p for p in PARTS if p in parts]
    sizes = [len(parts[p]) for p in order]
    bounds = list(zip(np.cumsum([0] + sizes[:-1]).tolist(), np.cumsum(sizes).tolist()))
    searched = {(a, b) for a in order for b in order
                if not (leaks_only and a in TRAINING and b in TRAINING)}
    index = {(order.index(a), order.index(b)) for a, b in searched}
    thumbs = _join(parts, order, 'thumbs')
    _, other = nearest_candidates(thumbs, bounds, index, progress)
    del thumbs
    grey = _join(parts, order, 'grey')
    threshold = near_threshold(grey.shape[1]) if threshold is None else threshold
    digests = np.concatenate([parts[p].digests for p in order])
    exact, exact_other = exact_copies(digests, bounds)
    exact &= other >= 0  # only where searched
    other = np.where(exact, exact_other, other)
    # Each unordered pair is verified once.
    rows = np.repeat(np.arange(len(other)), len(order)).reshape(other.shape)
    found = (other >= 0) & ~exact
    low, high = np.minimum(rows, other)[found], np.maximum(rows, other)[found]
    keys, inverse = np.unique(low * len(other) + high, return_inverse=True)
    distance = np.full(other.shape, np.nan, np.float32)
    distance[found] = verify(grey, keys // len(other), keys % len(other), progress)[inverse]
    distance[exact] = 0.0
    return Duplicates(order, bounds, other, distance, exact, threshold, searched)


def _join(parts, order, field):
    """The arrays `field` of the parts, concatenated; the parts' own are released (set to None),
    so that the largest one is held twice only while it is copied."""
    joined = []
    for p in order:
        joined.append(getattr(parts[p], field))
        setattr(parts[p], field, None)
    return np.concatenate(joined)


def exact_copies(digests, bounds):
    """(has [N, P] bool, row [N, P]): whether row i has another row of part p with the same
    fingerprint, and one such row."""
    n = len(digests)
    has = np.zeros((n, len(bounds)), bool)
    other = np.full((n, len(bounds)), -1, np.int64)
    for p, (lo, hi) in enumerate(bounds):
        order = np.argsort(digests[lo:hi], kind='stable')
        keys = digests[lo:hi][order]
        first = np.searchsorted(keys, digests, 'left')
        last = np.searchsorted(keys, digests, 'right')
        own = (np.arange(n) >= lo) & (np.arange(n) < hi)
        count = last - first - own
        has[:, p] = count > 0
        # The first row of the group, or the second if the first is the image itself.
        pick = np.minimum(first + (order[np.minimum(first, hi - lo - 1)] + lo == np.arange(n)),
                          hi - lo - 1)
        other[has[:, p], p] = order[pick[has[:, p]]] + lo
    return has, other


# ----------------------------------------------------------------------------------------------
# The report.

def duplicate_counts(dup):
    """[{part, in, images, exact, near}]: images of `part` with a copy in part `in`, leaks first."""
    near, rows = dup.near(), []
    for a, b in LEAKS + _other_combos(dup):
        if (a, b) in dup.searched:
            r, p = dup.rows(a), dup.order.index(b)
            rows.append({'part': a, 'in': b, 'images': r.stop - r.start,
                         'exact': int(dup.exact[r, p].sum()), 'near': int(near[r, p].sum())})
    others = [dup.order.index(b) for b in ('labeled', 'unlabeled', 'valid') if b in dup.order]
    if 'test' in dup.order and others:
        # The audit's number: test images with a copy anywhere in the training file.
        r = dup.rows('test')
        rows.insert(sum((x['part'], x['in']) in LEAKS and x['part'] == 'test' for x in rows), {
            'part': 'test', 'in': 'any', 'images': r.stop - r.start,
            'exact': int(dup.exact[r][:, others].any(1).sum()),
            'near': int(near[r][:, others].any(1).sum())})
    return rows


def _other_combos(dup):
    """The (part, in) pairs that are not leaks (either way round)."""
    return tuple((a, b) for a in dup.order for b in dup.order
                 if (a, b) not in LEAKS and (b, a) not in LEAKS)


def pair_list(dup, parts, combos):
    """[{part, position, in, in_position, distance, exact}]: every image of a part with a near
    copy in another (each unordered pair once), for the (part, in) `combos`, closest first."""
    near, out, seen = dup.near(), [], set()
    for a, b in combos:
        if (a, b) not in dup.searched:
            continue
        r, p = dup.rows(a), dup.order.index(b)
        for i in np.flatnonzero(near[r, p]) + r.start:
            j = int(dup.other[i, p])
            key = (min(i, j), max(i, j))
            if key in seen:
                continue
            seen.add(key)
            out.append(_pair(dup, parts, int(i), j, a, b, p))
    return sorted(out, key=lambda x: (x['distance'], x['part'], x['position']))


def _pair(dup, parts, i, j, a, b, p):
    lo_a, lo_b = dup.rows(a).start, dup.rows(b).start
    return {'part': a, 'position': int(parts[a].positions[i - lo_a]), 'row': i,
            'in': b, 'in_position': int(parts[b].positions[j - lo_b]), 'in_row': j,
            'distance': round(float(dup.distance[i, p]), 4), 'exact': bool(dup.exact[i, p])}


def near_misses(dup, parts, combos, n):
    """The `n` closest verified pairs of `combos` that are not near duplicates."""
    out = []
    for a, b in combos:
        if (a, b) not in dup.searched:
            continue
        r, p = dup.rows(a), dup.order.index(b)
        d = dup.distance[r, p]
        miss = np.flatnonzero(np.isfinite(d) & (d > dup.threshold))
        for i in miss[np.argsort(d[miss])[:n]] + r.start:
            out.append(_pair(dup, parts, int(i), int(dup.other[i, p]), a, b, p))
    return sorted(out, key=lambda x: x['distance'])[:n]


def balance(parts, nclass):
    """{part: {'counts': [images of class 0, ..., K-1], 'ood': images labeled -1}} of the parts
    whose labels are known (the unlabeled part only when its file keeps labels)."""
    out = {}
    for name in ('labeled', 'valid', 'test', 'unlabeled'):
        if name not in parts:
            continue
        labels = parts[name].labels
        if name == 'unlabeled' and (labels >= 0).sum() == 0:
            continue  # no labels known
        counts = np.bincount(labels[labels >= 0], minlength=nclass)[:nclass]
        out[name] = {'counts': counts.tolist(), 'ood': int((labels < 0).sum())}
    return out


# ----------------------------------------------------------------------------------------------
# A trained run: the unlabeled pool through the evaluated model.

def run_predictor(run, dataset):
    """(predict function, args, checkpoint) of run folder/checkpoint `run`, checked against
    `dataset`: a run trained on data of another class count or image shape is a UserError."""
    from libml import predict
    prefix, run_dir = runs.resolve_checkpoint(run)
    args = runs.read_args(run_dir)
    got = (int(args['nclass']), int(args['height']), int(args['width']), int(args['channels']))
    want = (dataset.nclass, dataset.height, dataset.width, dataset.channels)
    if got != want:
        describe = lambda k, h, w, c: f'{k} classes, {h}x{w}x{c} images'
        raise UserError(f'--run={run} was trained on {args.get("dataset", "another dataset")} '
                        f'({describe(*got)}) but {dataset.name} has {describe(*want)}; give a run '
                        'trained on this dataset.')
    model = runs.restore_ema(prefix, args)
    fn = predict.probability_function(model, *want[1:])  # holds the model weakly
    import tensorflow as tf

    def probabilities(images, model=model):
        return fn(tf.constant(images, tf.float32)).numpy()
    return probabilities, args, prefix


NO_VALIDATION = ('--run: there are no validation images to set the confidence threshold from; '
                 'pass --ood_threshold=P (0 < P < 1) or use a dataset name with -VALID > 0.')


def ood_summary(unlabeled, valid, nclass, threshold=None, mismatch=False):
    """The estimated class distribution and out-of-distribution share of the unlabeled pool.

    unlabeled, valid: Parts with `confidence` and `predicted`. threshold: the confidence below
    which an image is flagged (None: the VALID_QUANTILE quantile of the validation confidences).
    The share flagged f counts in-distribution images that fall below the threshold too, at the
    rate q measured on validation; assuming every out-of-distribution image falls below it, the
    out-of-distribution share is estimated as (f - q) / (1 - q). On a _mismatch dataset (`mismatch`,
    label -1 = out of distribution) the flags are scored against the truth.
    """
    if threshold is None:
        if valid is None:
            raise UserError(NO_VALIDATION)
        threshold = float(np.quantile(valid.confidence, VALID_QUANTILE))
    below_valid = float((valid.confidence < threshold).mean()) if valid is not None else 0.0
    flagged = unlabeled.confidence < threshold
    share = float(flagged.mean())
    estimate = float(np.clip((share - below_valid) / (1 - below_valid), 0, 1)) \
        if below_valid < 1 else share
    kept = unlabeled.predicted[~flagged]
    out = {'threshold': threshold, 'validation_below': below_valid, 'flagged_share': share,
           'ood_estimate': estimate, 'images': len(unlabeled),
           'predicted_counts': np.bincount(kept, minlength=nclass)[:nclass].tolist(),
           'predicted_counts_all': np.bincount(unlabeled.predicted, minlength=nclass)[:nclass]
           .tolist()}
    labels = unlabeled.labels
    if (labels >= 0).any():
        out['true_counts'] = np.bincount(labels[labels >= 0], minlength=nclass)[:nclass].tolist()
    if mismatch:
        from sklearn.metrics import precision_score, recall_score
        truth = labels < 0
        out.update(true_ood_share=float(truth.mean()),
                   precision=float(precision_score(truth, flagged, zero_division=0)),
                   recall=float(recall_score(truth, flagged, zero_division=0)))
    return out


# ----------------------------------------------------------------------------------------------
# Acting on it: a split without the training and validation images that duplicate test images.

NOLEAK_SUFFIX = '_noleak'


def leaked_records(dup, parts):
    """{part: sorted positions in its file} of the labeled, unlabeled and validation images with an
    exact or near copy among the test images: those whose nearest test image is a copy, and the
    copies found as the nearest image of a test image (the two searches can differ)."""
    if 'test' not in dup.order:
        return {}
    near, t, test_rows = dup.near(), dup.order.index('test'), dup.rows('test')
    out = {}
    for name in ('labeled', 'unlabeled', 'valid'):
        if name in dup.order:
            rows, p = dup.rows(name), dup.order.index(name)
            hit = np.flatnonzero(near[rows, t])
            found = dup.other[test_rows, p][near[test_rows, p]] - rows.start
            out[name] = np.unique(parts[name].positions[np.concatenate([hit, found])]).tolist()
    return out


@dataclasses.dataclass
class NoleakPlan:
    """What --drop_leaks writes: the split {name}_noleak.{seed}@{size} beside the inspected one,
    made from the same inputs (`paths`), and the test file `test` under the new name."""
    dataset: object
    split: object
    content: dict
    root: str
    new: str
    paths: dict
    test: str

    @property
    def stem(self):
        return f'{self.new}.{self.split.seed}@{self.split.size}'


def noleak_split_name(name):
    """The SplitName of dataset `name` if --drop_leaks can act on it (a split made by
    create_split.py: NAME.SEED@SIZE[-VALID], not derived), else a UserError saying what to do."""
    text = name if '-' in (name or '') else f'{name}-0'
    try:
        split = names.parse_ssl_name(text, 'DATASET')
    except UserError:
        split = None
    if split is None or len(names.lineage(split.name)) > 1:
        hint = 'give a split NAME.SEED@SIZE-VALID made by create_split.py'
        if split is not None:
            base = names.base_name(split.name)
            hint = (f'run it on {base}.{split.seed}@{split.size}-{split.valid}, then make the '
                    f'derived dataset again from {base}{NOLEAK_SUFFIX}.{split.seed}@{split.size}')
        raise UserError(f'--drop_leaks writes a new split from one made by create_split.py, which '
                        f'{name} is not; {hint}.')
    return split


def plan_noleak(dataset):
    """The NoleakPlan of `dataset`, checked before any work: a split made by create_split.py (its
    map JSON matching its files and inputs), whose _noleak files do not exist yet."""
    split = noleak_split_name(dataset.name)
    root = os.path.dirname(os.path.dirname(os.path.abspath(dataset.unlabeled.path)))
    map_path = names.split_map_path(split.stem, root)
    content = files.read_json(map_path, 'split map')
    for key, part in (('label', dataset.labeled), ('unlabel', dataset.unlabeled)):
        if len(content.get(key, ())) != part.count:
            raise UserError(f'{map_path} lists {len(content.get(key, ()))} "{key}" records but '
                            f'{part.path} holds {part.count}: they do not belong together; '
                            '--drop_leaks needs the split as create_split.py wrote it.')
    for given in content['inputs']:
        meta = records.read_meta(given['path'], names.creation_hint(given['path']))
        if meta['count'] != given['count']:
            raise UserError(f'{given["path"]} holds {meta["count"]} records but {map_path} was '
                            f'made from {given["count"]}: the input changed since the split was '
                            'made, so its record ids no longer match; make the split again.')
    new = f'{split.name}{NOLEAK_SUFFIX}'
    _, paths = splits.split_paths(os.path.join(root, 'SSL', new), split.seed, split.size)
    plan = NoleakPlan(dataset, split, content, root, new, paths,
                      names.record_path(new, 'test', root))
    for path in paths.values():
        if os.path.exists(path):
            raise UserError(f'{path} exists: the split {plan.stem} was written before; delete its '
                            'files to write it again (nothing that exists is replaced).')
    if os.path.exists(plan.test) and not _same_file(plan.test, dataset.test.path):
        raise UserError(f'{plan.test} exists and differs from {dataset.test.path}; move it away '
                        f'so that {new} gets the test images of {split.name}.')
    return plan


def noleak_ids(plan, leaked):
    """The input record ids (those of the split's map JSON) of `leaked` (part -> positions in its
    file, leaked_records)."""
    content = plan.content
    ids = [content['label'][i] for i in leaked.get('labeled', [])]
    ids += [content['unlabel'][i] for key in ('unlabeled', 'valid') for i in leaked.get(key, [])]
    return sorted(set(ids))


def write_noleak(plan, ids, quiet=False):
    """Writes the split of `plan` without the input records `ids`, then the test file (a hard
    link, or a copy) and the class mapping under the new name. Returns the new dataset name
    (with the same -VALID)."""
    content, split = plan.content, plan.split
    splits.create_split(os.path.join(plan.root, 'SSL', plan.new),
                        [i['path'] for i in content['inputs']], split.seed, split.size,
                        content.get('label_size'), content.get('class_balance', False),
                        auto_unlabeled=False, quiet=quiet, exclude=ids)
    if not os.path.exists(plan.test):
        _link_or_copy(plan.dataset.test.path, plan.test)
    mapping = names.class_mapping_path(split.name, plan.root)
    target = names.class_mapping_path(plan.new, plan.root)
    if os.path.exists(mapping) and not os.path.exists(target):
        files.write_json(target, files.read_json(mapping))
    return f'{plan.stem}-{split.valid}'


def _same_file(a, b):
    import filecmp
    return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)


def _link_or_copy(src, dst):
    """dst: a hard link to record file src (a copy where links are impossible), then its
    metadata file, written after it as records.read_meta expects."""
    import shutil
    with files.atomic_output(dst) as tmp:
        try:
            os.link(os.path.realpath(src), tmp)
        except OSError:
            shutil.copyfile(src, tmp)
    files.write_json(names.meta_path(dst), records.read_meta(src))


# ----------------------------------------------------------------------------------------------
# Pictures (matplotlib, no display needed).

def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def read_images(path, positions, shape):
    """{position: uint8 image [H, W, C]} of the records at `positions` of `path` (only those
    are decoded)."""
    import tensorflow as tf
    wanted = np.zeros(records.read_meta(path)['count'], bool)
    wanted[list(positions)] = True
    mask = tf.constant(wanted)
    ds = tf.data.TFRecordDataset(path, buffer_size=8 << 20).enumerate()
    ds = ds.filter(lambda i, raw: tf.gather(mask, i))
    ds = ds.map(lambda i, raw: (i, tf.io.decode_png(records.parse_records(raw[None])['image'][0],
                                                    channels=shape[2])))
    return {int(i): image for i, image in ds.as_numpy_iterator()}


def plot_pairs(sections, parts, shape, path, columns=4):
    """A PNG of image pairs side by side, upscaled without smoothing (legible at 8x8), each with
    its parts, record positions and distance. sections: [(title, [pair dict])]."""
    plt = _pyplot()
    needed = {}
    for _, pairs in sections:
        for x in pairs:
            needed.setdefault(parts[x['part']].path, set()).add(x['position'])
            needed.setdefault(parts[x['in']].path, set()).add(x['in_position'])
    images = {p: read_images(p, pos, shape) for p, pos in needed.items()}
    sections = [(t, pairs) for t, pairs in sections if pairs]
    rows = sum(-(-len(pairs) // columns) for _, pairs in sections) or 1
    fig = plt.figure(figsize=(columns * 2.6, rows * 1.75 + 0.45 * len(sections) + 0.2))
    grid = fig.add_gridspec(rows + len(sections), columns,
                            height_ratios=sum(([0.25] + [1] * -(-len(p) // columns)
                                               for _, p in sections), []) or [1])
    row = 0
    for title, pairs in sections:
        header = fig.add_subplot(grid[row, :])
        header.axis('off')
        header.text(0, 0.2, title, fontsize=11, weight='bold')
        row += 1
        for k, x in enumerate(pairs):
            a = images[parts[x['part']].path][x['position']]
            b = images[parts[x['in']].path][x['in_position']]
            gap = np.full((a.shape[0], max(1, a.shape[1] // 8), a.shape[2]), 255, np.uint8)
            ax = fig.add_subplot(grid[row + k // columns, k % columns])
            pair = np.concatenate([a, gap, b], 1)
            ax.imshow(pair[..., 0] if shape[2] == 1 else pair, cmap='gray', vmin=0, vmax=255,
                      interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            what = 'exact' if x['exact'] else f'd={x["distance"]:.3f}'
            ax.set_title(f'{PART_NAMES[x["part"]]} {x["position"]} | {PART_NAMES[x["in"]]} '
                         f'{x["in_position"]}\n{what}', fontsize=8)
        row += -(-len(pairs) // columns)
    if not sections:
        fig.text(0.5, 0.5, 'no duplicates found', ha='center')
    _save(fig, path, plt)


def _save(fig, path, plt):
    with files.atomic_output(path) as tmp:
        fig.savefig(tmp, format='png', dpi=100, bbox_inches='tight')
    plt.close(fig)


def plot_balance(counts, class_names, path):
    """Grouped bars: the share of each class in each part with known labels."""
    plt = _pyplot()
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * k + 2), 3.5))
    width = 0.8 / max(1, len(counts))
    for n, (part, c) in enumerate(counts.items()):
        c = np.asarray(c['counts'], float)
        ax.bar(np.arange(k) + n * width - 0.4 + width / 2, c / max(1, c.sum()), width,
               label=f'{PART_NAMES[part]} ({int(c.sum())})')
    ax.set_xticks(np.arange(k))
    long_names = k > 6 and max(len(str(c)) for c in class_names) > 2
    ax.set_xticklabels(class_names, fontsize=8, rotation=45 if long_names else 0,
                       ha='right' if long_names else 'center')
    ax.set_ylabel('share of the part')
    ax.set_title('Class balance (images of each class / images of the part)')
    ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1))
    _save(fig, path, plt)


def plot_confidence(unlabeled, valid, threshold, mismatch, path):
    """Histogram of the evaluated model's confidence (highest probability) on the unlabeled pool
    (split by the truth on _mismatch datasets) and on validation, with the threshold."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 41)
    if mismatch:
        ood = unlabeled.labels < 0
        ax.hist(unlabeled.confidence[~ood], bins, alpha=0.6, density=True,
                label='unlabeled, in distribution')
        ax.hist(unlabeled.confidence[ood], bins, alpha=0.6, density=True,
                label='unlabeled, out of distribution')
    else:
        ax.hist(unlabeled.confidence, bins, alpha=0.6, density=True, label='unlabeled')
    if valid is not None:
        ax.hist(valid.confidence, bins, histtype='step', density=True, color='k',
                label='validation')
    ax.axvline(threshold, color='r', linestyle='--', label=f'threshold {threshold:.2f}')
    ax.set_xlabel('confidence (highest predicted probability)')
    ax.set_ylabel('density')
    ax.legend(fontsize=8)
    _save(fig, path, plt)


# ----------------------------------------------------------------------------------------------
# Everything.

def inspect(name, out_dir, run=None, threshold=None, ood_threshold=None,
            leaks_only=False, drop_leaks=False, overwrite=False, progress=True):
    """Inspects dataset `name`; writes report.json, pairs.png, balance.png (and confidence.png
    with a run) into the folder `out_dir` (complete or not at all); with `drop_leaks`, the split
    without leaks (write_noleak). Returns the report (a dict, as report.json)."""
    started = time.time()
    if drop_leaks:
        noleak_split_name(name)  # a name it cannot act on is said before any file is read
    dataset = resolve_name(name)
    plan = plan_noleak(dataset) if drop_leaks else None
    files.check_new_output(out_dir, overwrite)
    mismatch = '@' in dataset.name and names.is_mismatch(dataset.name.split('.')[0])
    predictor = None
    if run is not None:
        if dataset.unlabeled is None:
            raise UserError(f'--run: {dataset.name} has no unlabeled part to estimate; give a '
                            'semi-supervised split NAME.SEED@SIZE-VALID.')
        if ood_threshold is None and dataset.valid is None:
            raise UserError(NO_VALIDATION)
        predictor, args, prefix = run_predictor(run, dataset)
    seconds = {}
    clock = time.time()
    parts = read_parts(dataset, predictor, progress)
    seconds['read'] = time.time() - clock
    clock = time.time()
    dup = find_duplicates(parts, threshold, leaks_only, progress)
    seconds['duplicates'] = time.time() - clock
    class_names = dataset.class_names or [str(k) for k in range(dataset.nclass)]
    report = {
        'dataset': dataset.name, 'shape': list(dataset.shape), 'classes': class_names,
        'parts': {p: {'path': parts[p].path, 'images': len(parts[p])} for p in dup.order},
        'measure': {'near_threshold': dup.threshold, 'align_size': align_size(dataset.shape),
                    'distance': '1 - aligned band-pass correlation (libml/inspection.py)',
                    'leaks_only': leaks_only},
        'duplicates': duplicate_counts(dup),
        'leaks': pair_list(dup, parts, LEAKS),
        'other_pairs': pair_list(dup, parts, _other_combos(dup)),
        'leaked_records': leaked_records(dup, parts),
        'balance': balance(parts, dataset.nclass),
    }
    if run is not None:
        report['run'] = dict(ood_summary(parts['unlabeled'], parts.get('valid'), dataset.nclass,
                                         ood_threshold, mismatch),
                             checkpoint=prefix, trained_on=args.get('dataset'),
                             threshold_from='--ood_threshold' if ood_threshold is not None else
                             f'the {VALID_QUANTILE:.0%} quantile of the validation confidences')
    clock = time.time()
    with files.atomic_folder(out_dir, overwrite) as tmp:
        leaks = report['leaks']
        shown = leaks if len(leaks) <= 16 else [
            leaks[i] for i in np.linspace(0, len(leaks) - 1, 16).round().astype(int)]
        sections = [(f'Leaks: test or validation images with a copy in another part '
                     f'({len(leaks)}; {len(shown)} shown, closest to farthest)', shown),
                    ('Closest pairs above the threshold (not counted)',
                     near_misses(dup, parts, LEAKS, 8)),
                    (f'Other duplicates, within and between parts ({len(report["other_pairs"])}; '
                     'closest shown)', report['other_pairs'][:8])]
        plot_pairs(sections, parts, dataset.shape, os.path.join(tmp, 'pairs.png'))
        plot_balance(report['balance'], class_names, os.path.join(tmp, 'balance.png'))
        if run is not None:
            plot_confidence(parts['unlabeled'], parts.get('valid'), report['run']['threshold'],
                            mismatch, os.path.join(tmp, 'confidence.png'))
        seconds['pictures'] = time.time() - clock
        for pair in report['leaks'] + report['other_pairs']:
            del pair['row'], pair['in_row']
        if plan is not None:
            report['noleak'] = {'dataset': f'{plan.stem}-{plan.split.valid}',
                                'excluded_ids': noleak_ids(plan, report['leaked_records']),
                                'files': dict(plan.paths, test=plan.test)}
        seconds['total'] = time.time() - started
        report['seconds'] = {k: round(v, 2) for k, v in seconds.items()}
        report['peak_memory_gb'] = round(peak_memory_gb(), 2)
        files.write_json(os.path.join(tmp, 'report.json'), report)
    if plan is not None:  # after the report is in place: a split that cannot be made loses nothing
        try:
            write_noleak(plan, report['noleak']['excluded_ids'], quiet=not progress)
        except UserError as e:
            raise UserError(f'{e} (--drop_leaks: the split was not written; the report is in '
                            f'{os.path.abspath(out_dir)}.)') from None
    return report


def peak_memory_gb():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # kB on Linux


# ----------------------------------------------------------------------------------------------
# The printed summary.

def format_report(report):
    """The lines scripts/inspect_data.py prints: leaks first, then the other duplicates, the class
    balance and the run's estimates."""
    parts, classes = report['parts'], report['classes']
    lines = [f'{report["dataset"]}: ' + ', '.join(f'{v["images"]} {PART_NAMES[p]}'
                                                  for p, v in parts.items())
             + f' images ({"x".join(map(str, report["shape"]))})', '',
             f'Duplicates (exact: equal pixels; near: distance <= '
             f'{report["measure"]["near_threshold"]:g}, exact ones included)',
             f'  {"images of ... with a copy in ...":<44s}{"images":>8s}{"exact":>8s}{"near":>8s}'
             f'{"share":>9s}']
    is_leak = lambda r: (r['part'], r['in']) in set(LEAKS) | {('test', 'any')}
    for heading, rows in (('leaks', [r for r in report['duplicates'] if is_leak(r)]),
                          ('other', [r for r in report['duplicates'] if not is_leak(r)])):
        if rows:
            lines.append(f' {heading}')
        for r in rows:
            where = 'any other part' if r['in'] == 'any' else PART_NAMES[r['in']]
            what = f'{PART_NAMES[r["part"]]} with a copy in {where}'
            lines.append(f'  {what:<44s}{r["images"]:>8d}{r["exact"]:>8d}{r["near"]:>8d}'
                         f'{100 * r["near"] / max(1, r["images"]):>8.2f}%')
    counts = report['balance']
    if counts:
        lines += ['', 'Class balance (images per class)']
        if len(classes) <= 20:
            lines.append(f'  {"class":<16s}' + ''.join(f'{PART_NAMES[p]:>12s}' for p in counts))
            for k, name in enumerate(classes):
                lines.append(f'  {str(name)[:16]:<16s}' + ''.join(f'{c["counts"][k]:>12d}'
                                                                 for c in counts.values()))
        for p, c in counts.items():
            n = np.asarray(c['counts'])
            ood = f', {c["ood"]} out of distribution' if c['ood'] else ''
            lines.append(f'  {PART_NAMES[p]}: {n.sum()} images, {int((n > 0).sum())} of '
                         f'{len(n)} classes present, {n.min()} to {n.max()} per class{ood}')
    run = report.get('run')
    if run:
        lines += ['', f'Unlabeled pool through the evaluated model of {run["checkpoint"]}',
                  f'  confidence threshold {run["threshold"]:.3f} ({run["threshold_from"]}; '
                  f'{100 * run["validation_below"]:.1f}% of validation images fall below it)',
                  f'  flagged out of distribution: {100 * run["flagged_share"]:.1f}% of '
                  f'{run["images"]}; estimated out-of-distribution share '
                  f'{100 * run["ood_estimate"]:.1f}%']
        if 'precision' in run:
            lines.append(f'  truth (label -1): {100 * run["true_ood_share"]:.1f}% out of '
                         f'distribution; flagged images: precision {run["precision"]:.2f}, '
                         f'recall {run["recall"]:.2f}')
        share = np.asarray(run['predicted_counts'], float)
        share = share / max(1, share.sum())
        lines.append('  estimated class distribution (images not flagged): ' + ', '.join(
            f'{c} {100 * s:.1f}%' for c, s in zip(classes, share)))
        if 'true_counts' in run:
            true = np.asarray(run['true_counts'], float)
            lines.append('  true class distribution (labels in the file):     ' + ', '.join(
                f'{c} {100 * s:.1f}%' for c, s in zip(classes, true / max(1, true.sum()))))
    return lines

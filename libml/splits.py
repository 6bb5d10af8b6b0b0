"""Semi-supervised splits (scripts/create_split.py): planning which records go where, and writing
the label file, the unlabeled file and the map JSON.

How it streams (memory does not grow with the data beyond a few numbers per record)
  Records are copied as serialized bytes, never decoded. One pass reads the inputs, keeping only
  the label, offset and length of each record, and appends the raw records to a temporary spill
  file beside the outputs. The split is then planned on those arrays, and each output is written
  by reading the spill file back in output order, a window of at most --buffer_mb megabytes at a
  time: the records of a window are read in file-offset order (one forward sweep, so the reads
  are sequential) and written in output order. Peak memory is therefore TensorFlow's own (about
  600 MB, mostly its libraries) plus --buffer_mb plus the per-record numbers (about 100 bytes per
  record with the id lists of the map JSON), whatever the size of the images; the cost is one
  temporary copy of the inputs on disk, removed at the end (after a kill, by the next run of the
  same split). The label file is in input order.

The inputs' metadata files must agree with their records (count, label counts, classes): the
split is planned on the records as read, and a disagreement stops it before anything is written.

The map JSON holds: `name`, `seed`, `label_split_size`, `label_size`, `class_balance`, `inputs`
([{path, count, first_id}], record ids number the concatenation of the inputs in this order),
`pool_size`, `label` (ids, in label-file order), `unlabel` (ids, in unlabel-file order),
`valid_candidates` (the held-out labeled ids: the first `max_valid` = pool_size - N of `unlabel`),
`max_valid`, `label_counts` ({class: count} of the labeled set), `nclass`, `class_names`; and,
for a split written with `exclude` (scripts/inspect_data.py --drop_leaks), `excluded` (the ids
left out of every part).
"""
import os
import re

import numpy as np
from tqdm import tqdm

from libml import files, names, records
from libml.utils import UserError


# ----------------------------------------------------------------------------------------------
# Planning: pure functions of labels, testable without files.

def allocate(counts, size, balanced=False):
    """Labeled images per class: {class: n} summing to `size`, n <= counts[class], n >= 1.

    counts: {class: images of that class in the pool} (classes with 0 images are ignored).
    Proportional: largest-remainder rounding of size * share (ties to the lower class index),
    then every class that rounded to 0 takes one image from the most over-served class.
    Balanced: size / K each; a class with fewer images gives all it has and the rest is shared
    among the others (the first classes get the remainder).
    """
    classes = sorted(c for c, n in counts.items() if n > 0)
    total = sum(counts[c] for c in classes)
    if size > total or size < len(classes):
        raise ValueError(f'cannot draw {size} images from {total} in {len(classes)} classes')
    if balanced:
        quota, left, open_ = {}, size, list(classes)
        # Water filling: the smallest classes are exhausted first.
        for c in sorted(classes, key=lambda c: (counts[c], c)):
            if counts[c] * len(open_) <= left:
                quota[c] = counts[c]
                left -= counts[c]
                open_.remove(c)
        share, extra = divmod(left, len(open_)) if open_ else (0, 0)
        for i, c in enumerate(open_):
            quota[c] = share + (1 if i < extra else 0)
        return quota
    exact = {c: size * counts[c] / total for c in classes}
    quota = {c: int(exact[c]) for c in classes}
    left = size - sum(quota.values())
    for c in sorted(classes, key=lambda c: (-(exact[c] - quota[c]), c))[:left]:
        quota[c] += 1
    for c in classes:
        if quota[c] == 0:
            donor = max((d for d in classes if quota[d] > 1),
                        key=lambda d: (quota[d] - exact[d], quota[d], -d))
            quota[donor] -= 1
            quota[c] = 1
    return quota


def interleave(groups):
    """Round-robin over arrays: g0[0], g1[0], ..., gK[0], g0[1], ... (empty groups skipped)."""
    groups = [np.asarray(g, np.int64) for g in groups]
    if not groups or not sum(len(g) for g in groups):
        return np.zeros(0, np.int64)
    ids = np.concatenate(groups)
    rank = np.concatenate([np.arange(len(g)) for g in groups])
    group = np.concatenate([np.full(len(g), k) for k, g in enumerate(groups)])
    return ids[np.lexsort((group, rank))]


def plan_split(labels, seed, size, label_size=None, balanced=False, exclude=None):
    """Decides where every record goes.

    labels: int array, the label of each record in input order (-1: no label).
    exclude: ids of records left out of every part (e.g. duplicates of test images). The split is
    otherwise the one made without them: the same per-class quota and the same seeded order of
    each class, so every labeled image kept stays labeled and an excluded one is replaced by the
    next image of its class in that order.
    Returns dict(label=ids in input order, unlabel=ids in unlabeled-file order, max_valid=the
    number of held-out labeled ids at the head of `unlabel`, pool_size, label_counts).
    Raises UserError for impossible requests.
    """
    labels = np.asarray(labels, np.int64)
    n = len(labels)
    keep = np.ones(n, bool)
    if exclude is not None and len(exclude):
        exclude = np.asarray(exclude, np.int64)
        if exclude.min() < 0 or exclude.max() >= n:
            raise UserError(f'record id {exclude.max() if exclude.max() >= n else exclude.min()} '
                            f'to exclude is outside the input (ids 0..{n - 1}); was the input '
                            'changed since the ids were found?')
        keep[exclude] = False
    if label_size is not None:
        if label_size > n:
            raise UserError(f'--label_size={label_size} is larger than the input ({n} records).')
        unlabeled_in_pool = np.flatnonzero(labels[:label_size] < 0)
        if len(unlabeled_in_pool):
            raise UserError(f'--label_size={label_size}: record {unlabeled_in_pool[0]} of the '
                            f'first {label_size} has no label; give the labeled file first, or a '
                            'smaller --label_size.')
        in_pool = np.zeros(n, bool)
        in_pool[:label_size] = True
    else:
        in_pool = labels >= 0
    pool_size = int(in_pool.sum())
    pool_labels = labels[in_pool]
    counts = {int(c): int(k) for c, k in zip(*np.unique(pool_labels, return_counts=True))}
    where = '--label_size' if label_size is not None else 'the labeled input records'
    if size > pool_size:
        raise UserError(f'--label_split_size={size} is larger than the labeled pool ({pool_size} '
                        f'images: {where}); choose at most {pool_size}.')
    if size < len(counts):
        raise UserError(f'--label_split_size={size} is smaller than the number of classes '
                        f'({len(counts)}): every class needs at least one labeled image.')
    quota = allocate(counts, size, balanced)

    label_parts, heldout_groups = [], []
    for c in sorted(counts):
        ids = np.flatnonzero(in_pool & (labels == c))
        if seed:
            # One generator per class: the draw of a class does not depend on the other classes.
            ids = np.random.default_rng([seed, c]).permutation(ids)
        ids = ids[keep[ids]]  # after the draw, so the images kept are those drawn without exclusion
        if len(ids) < quota[c]:
            raise UserError(f'class {c} keeps {len(ids)} labeled images once the excluded records '
                            f'are left out, fewer than the {quota[c]} its share of '
                            f'--label_split_size={size} needs; choose a smaller split.')
        label_parts.append(ids[:quota[c]])
        heldout_groups.append(ids[quota[c]:])
    label = np.sort(np.concatenate(label_parts))
    heldout = interleave(heldout_groups)
    outside = np.flatnonzero(~in_pool & keep)
    return dict(label=label, unlabel=np.concatenate([heldout, outside]), max_valid=len(heldout),
                pool_size=int((in_pool & keep).sum()),
                label_counts={c: quota[c] for c in sorted(quota)})


# ----------------------------------------------------------------------------------------------
# Files.

def find_inputs(paths, auto_unlabeled=True):
    """The input files, checked, plus `{name}-unlabeled.tfrecord` beside `{name}-train.tfrecord`.

    Returns the absolute paths, the given ones first (in their order), then those found.
    """
    if not paths:
        raise UserError('no input record file given.')
    inputs = []
    for path in paths:
        names.require_file(path, names.creation_hint(path))
        inputs.append(os.path.abspath(path))
    if len(set(map(os.path.realpath, inputs))) != len(inputs):
        raise UserError('the same input file is given twice.')
    if auto_unlabeled:
        given = set(map(os.path.realpath, inputs))
        for path in list(inputs):
            m = re.fullmatch(r'(.*)-train\.tfrecord', path)
            extra = m and f'{m.group(1)}-unlabeled.tfrecord'
            if extra and os.path.exists(extra) and os.path.realpath(extra) not in given:
                inputs.append(extra)
                given.add(os.path.realpath(extra))
    return inputs


def combined_meta(inputs):
    """Shape, nclass and class names common to the inputs (from their metadata files)."""
    metas = [records.read_meta(p, names.creation_hint(p)) for p in inputs]
    shapes = {(m['height'], m['width'], m['channels']) for m in metas}
    if len(shapes) > 1:
        raise UserError('the input files hold images of different shapes: ' + ', '.join(
            f'{os.path.basename(p)} {m["height"]}x{m["width"]}x{m["channels"]}'
            for p, m in zip(inputs, metas)) + '.')
    class_names = next((m['class_names'] for m in metas if m.get('class_names')), None)
    nclass = max((m['nclass'] for m in metas if m.get('nclass')), default=None)
    return dict(shape=shapes.pop(), nclass=nclass, class_names=class_names,
                counts=[int(m['count']) for m in metas], metas=metas)


def check_meta(path, meta, labels):
    """Stops when the records of input `path` (their `labels`, as read) disagree with the facts
    its metadata file states: the split was planned on them, and they would reach its files."""
    found = {str(c): int(n) for c, n in zip(*np.unique(labels, return_counts=True))}
    stated = {k: v for k, v in (meta.get('label_counts') or found).items() if v}
    if len(labels) != meta['count']:
        wrong = f'holds {len(labels)} records, its metadata says {meta["count"]}'
    elif stated != found:
        wrong = f'holds the labels {found}, its metadata says {stated}'
    elif meta.get('nclass') and len(labels) and labels.max() >= meta['nclass']:
        wrong = f'holds label {labels.max()}, its metadata says {meta["nclass"]} classes'
    else:
        return
    raise UserError(f'{path} {wrong}: {names.meta_path(path)} is wrong; delete it (then the file '
                    f'is scanned) or recreate the file ({names.creation_hint(path)})')


def split_paths(prefix, seed, size):
    """{part: path} of the split OUTPUT_PREFIX.seed@size; checks the name."""
    folder, name = os.path.split(os.path.abspath(prefix))
    names.check_name(name, 'OUTPUT_PREFIX')
    stem = os.path.join(folder, f'{name}.{seed}@{size}')
    return name, {'label': f'{stem}-label.tfrecord', 'unlabel': f'{stem}-unlabel.tfrecord',
                  'map': f'{stem}-map.json'}


def copy_in_order(spill, ids, offsets, lengths, labels, writer, budget, progress):
    """Writes spilled records `ids`, in this order, reading at most `budget` bytes at a time."""
    ids = np.asarray(ids, np.int64)
    ends = np.cumsum(lengths[ids])
    start = 0
    while start < len(ids):
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + budget, side='right')), start + 1)
        window = ids[start:stop]
        chunk = [None] * len(window)
        for j in np.argsort(offsets[window], kind='stable').tolist():
            i = int(window[j])
            spill.seek(int(offsets[i]))
            chunk[j] = spill.read(int(lengths[i]))
        for raw, label in zip(chunk, labels[window].tolist()):
            writer.write_serialized(raw, label)
        progress.update(len(window))
        start = stop


def create_split(prefix, inputs, seed, size, label_size=None, class_balance=False,
                 overwrite=False, auto_unlabeled=True, buffer_mb=64, quiet=False, exclude=None):
    """Writes the split; returns {'paths': {part: path}, 'map': the map JSON content}.

    exclude: record ids (numbering the concatenated inputs) left out of every part (plan_split).
    """
    name, paths = split_paths(prefix, seed, size)
    if not overwrite:
        for path in paths.values():
            if os.path.exists(path):
                raise UserError(f'split {os.path.basename(paths["map"])[:-9]} exists ({path}); '
                                'pass --overwrite to replace it, or choose another --seed.')
    given = len(inputs)
    inputs = find_inputs(inputs, auto_unlabeled)
    meta = combined_meta(inputs)
    # Cheap checks from the metadata, before reading anything; plan_split checks exactly later.
    explicit = sum(meta['counts'][:given])
    if label_size is not None and label_size > explicit:
        raise UserError(f'--label_size={label_size} is larger than the input ({explicit} records).')
    if label_size is not None and size > label_size:
        raise UserError(f'--label_split_size={size} is larger than --label_size={label_size} '
                        f'(the labeled pool); use at most --label_split_size={label_size}.')

    files.output_folder(paths['unlabel'])
    # The spill file, a full copy of the inputs, is a temporary of the unlabeled file: one left
    # by a killed run is removed here, and a full disk while writing it is a one-line error.
    files.remove_stale_temporaries(paths['unlabel'])
    spill_path = files.temporary_name(paths['unlabel'], '.spill')
    total = sum(meta['counts'])
    import tensorflow  # noqa: F401  (loaded before the progress bar starts, so its rate is right)
    try:
        with files.storage_errors(paths['unlabel']), open(spill_path, 'w+b') as spill:
            labels, lengths, firsts = [], [], []
            with tqdm(total=total, unit='rec', desc='read', disable=quiet) as bar:
                for path in inputs:
                    firsts.append(sum(len(x) for x in labels))
                    for batch in records.read_records(path):
                        raw = batch['raw']
                        spill.write(b''.join(raw))
                        lengths.append(np.fromiter(map(len, raw), np.int64, len(raw)))
                        labels.append(batch['label'].astype(np.int64))
                        bar.update(len(raw))
            labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
            lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
            offsets = np.cumsum(lengths) - lengths
            bounds = list(zip(firsts, firsts[1:] + [len(labels)]))
            counts = [b - a for a, b in bounds]
            for path, input_meta, (a, b) in zip(inputs, meta['metas'], bounds):
                check_meta(path, input_meta, labels[a:b])
            plan = plan_split(labels, seed, size, label_size, class_balance, exclude)

            nclass = meta['nclass'] or (int(labels.max()) + 1 if len(labels) and labels.max() >= 0
                                        else None)
            writer_args = dict(shape=meta['shape'], nclass=nclass, class_names=meta['class_names'],
                               overwrite=overwrite)
            budget = max(1, int(buffer_mb * (1 << 20)))
            with tqdm(total=len(labels), unit='rec', desc='write', disable=quiet) as bar, \
                    records.RecordWriter(paths['unlabel'], **writer_args) as unlabel_writer, \
                    records.RecordWriter(paths['label'], **writer_args) as label_writer:
                copy_in_order(spill, plan['label'], offsets, lengths, labels, label_writer,
                              budget, bar)
                copy_in_order(spill, plan['unlabel'], offsets, lengths, labels, unlabel_writer,
                              budget, bar)
    finally:
        if os.path.exists(spill_path):
            os.remove(spill_path)

    content = {
        'name': name, 'seed': seed, 'label_split_size': size, 'label_size': label_size,
        'class_balance': bool(class_balance), 'nclass': nclass, 'class_names': meta['class_names'],
        'inputs': [{'path': p, 'count': c, 'first_id': f}
                   for p, c, f in zip(inputs, counts, firsts)],
        'pool_size': plan['pool_size'], 'max_valid': plan['max_valid'],
        'label_counts': {str(c): n for c, n in plan['label_counts'].items()},
        'label': plan['label'].tolist(), 'unlabel': plan['unlabel'].tolist(),
        'valid_candidates': plan['unlabel'][:plan['max_valid']].tolist(),
    }
    if exclude is not None:
        content['excluded'] = sorted(int(i) for i in set(np.asarray(exclude).tolist()))
    files.write_json(paths['map'], content)
    return {'paths': paths, 'map': content}

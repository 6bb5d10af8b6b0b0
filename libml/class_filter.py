"""Keeping the records of some classes (filter_dataset.py; its --help has the rules), renumbered
for the classes of the model as README 2.3's class-mismatch experiments need."""
import os
import re

import numpy as np
from tqdm import tqdm

from libml import names, records
from libml.utils import UserError

# An output path named like a dataset's file: {name}-{part}.tfrecord in $ML_DATA, or
# {name}.{seed}@{size}-{part}.tfrecord in $ML_DATA/SSL.
_OUTPUT_RE = re.compile(rf'({names.NAME_PATTERN})((?:\.\d+@\d+)?)-\w+\.tfrecord')


def parse_class_filter(text, nclass=None, flag='--class_filter'):
    """'2,3,4' -> [2, 3, 4] (sorted, unique); checks each index against `nclass` when known."""
    try:
        classes = sorted({int(x) for x in (text or '').split(',') if x.strip()})
    except ValueError:
        raise UserError(f'{flag}={text!r} must be comma-separated class indices, '
                        f'e.g. {flag}=2,3,4,5,6,7.') from None
    if not classes:
        raise UserError(f'{flag} is required: the class indices to keep, e.g. 2,3,4,5,6,7.')
    bad = [c for c in classes if c < 0 or (nclass is not None and c >= nclass)]
    if bad:
        limit = f'0..{nclass - 1}' if nclass is not None else '0 or more'
        raise UserError(f'{flag}={text}: class {bad[0]} does not exist (the data has '
                        f'classes {limit}).')
    return classes


def output_dataset(target):
    """(dataset name, '.{seed}@{size}' or '', its $ML_DATA) of an output path named like a
    dataset's file (see _OUTPUT_RE); None for any other path."""
    folder, base = os.path.split(os.path.abspath(target))
    m = _OUTPUT_RE.fullmatch(base)
    if not m or (m.group(2) and os.path.basename(folder) != 'SSL'):
        return None
    return m.group(1), m.group(2), os.path.dirname(folder) if m.group(2) else folder


def recorded_classes(target, required=True):
    """For an output of a class-mismatch dataset {name}_mismatch{N}: (file of {name} that records
    the classes of the model, those classes as input indices or None if that file was not
    relabeled). None for any other output, or when {name} has no label or test file yet (then a
    UserError if `required`)."""
    out = output_dataset(target)
    if out is None or not names.is_mismatch(out[0]):
        return None
    name, split, root = out
    candidates = []
    for ancestor in names.lineage(name)[1:]:
        if split:
            candidates.append(names.split_path(ancestor + split, 'label', root))
        candidates.append(names.record_path(ancestor, 'test', root))
    for path in candidates:
        if os.path.exists(path):
            class_map = records.read_meta(path).get('class_map')
            if class_map is None:
                return path, None
            return path, [int(c) for c, k in sorted(class_map.items(), key=lambda i: i[1]) if k >= 0]
    if not required:
        return None
    raise UserError(f'--save_name={target}: the classes of the model are those of '
                    f'{names.lineage(name)[-1]}, but it has no filtered label or test file yet '
                    f'({candidates[0]}); filter it first (README 2.3), or give --in_distribution.')


def model_classes(target, classes, nclass, relabel, in_distribution):
    """The classes of the model as input indices (label i of the output = input class result[i]),
    or None to keep labels as they are (see the module doc)."""
    recorded = recorded_classes(target, required=relabel and not in_distribution)
    if not relabel:
        if in_distribution:
            raise UserError('--in_distribution renumbers classes; it cannot go with --norelabel.')
        if recorded and recorded[1] is not None:
            raise UserError(f'--norelabel: {recorded[0]} was relabeled (its classes are '
                            f'{",".join(map(str, recorded[1]))}), so the labels of --save_name='
                            f'{target} would not match it; drop --norelabel.')
        return None
    if in_distribution:
        chosen = parse_class_filter(in_distribution, nclass, '--in_distribution')
        if recorded and recorded[1] is not None and recorded[1] != chosen:
            raise UserError(f'--in_distribution={in_distribution} disagrees with the classes '
                            f'{",".join(map(str, recorded[1]))} recorded in {recorded[0]}; drop it.')
        return chosen
    if recorded:
        if recorded[1] is None:
            raise UserError(f'{recorded[0]} keeps the labels of its input (not filtered with '
                            f'--relabel), so --save_name={target} must too: pass --norelabel, or '
                            'filter that file again without it.')
        return recorded[1]
    return classes


def filter_records(source, target, class_filter, keep_unlabeled=False, quiet=False, relabel=True,
                   in_distribution=None):
    """Writes the records of `source` whose label is in `class_filter` to `target`, relabeled
    (see the module doc) unless `relabel` is False.

    class_filter, in_distribution: '2,3,4' or a list of ints. Returns (records kept, records read).
    """
    if not source:
        raise UserError('--filter_dataset is required: the record file to filter.')
    if not target:
        raise UserError('--save_name is required: the output record file.')
    class_filter, in_distribution = (t if t is None or isinstance(t, str) else ','.join(map(str, t))
                                     for t in (class_filter, in_distribution))
    parse_class_filter(class_filter or '')  # a malformed filter is reported before any file is read
    if in_distribution:
        parse_class_filter(in_distribution, flag='--in_distribution')
    if os.path.abspath(source) == os.path.abspath(target) or (
            os.path.exists(source) and os.path.exists(target) and os.path.samefile(source, target)):
        raise UserError(f'--save_name={target} is the input file; choose another output name.')
    meta = records.read_meta(source, names.creation_hint(source))
    classes = parse_class_filter(class_filter, meta.get('nclass'))
    model = model_classes(target, classes, meta.get('nclass'), relabel, in_distribution)
    keep = np.array(classes + ([-1] if keep_unlabeled else []), np.int64)
    what = f'a label in {classes}' + (' or no label' if keep_unlabeled else '')
    # Check the metadata first, so "nothing kept" fails before the file is read.
    counts = {int(k): v for k, v in (meta.get('label_counts') or {}).items()}
    if counts and not sum(counts.get(int(c), 0) for c in keep):
        hint = ' (add --keep_unlabeled to keep records without a label)' if -1 in counts else ''
        raise UserError(f'no record of {source} has {what} (its labels: '
                        f'{sorted(counts)}); nothing written{hint}.')
    shape = (meta['height'], meta['width'], meta['channels'])
    nclass, class_names, extra = meta.get('nclass'), meta.get('class_names'), None
    if model is not None:
        # new[old + 1] = the output label of input label old (index 0: old = -1, no label).
        new = np.full(max(classes + model) + 2, -1, np.int64)
        new[np.array(model) + 1] = np.arange(len(model))
        extra = {'class_map': {str(c): int(new[c + 1]) for c in classes}}
        # An input without class names still names each class of the model by its old index.
        class_names = [class_names[c] if class_names else str(c) for c in model]
        nclass = len(model)
    with tqdm(total=meta['count'], unit='rec', desc='filter', disable=quiet) as bar, \
            records.RecordWriter(target, shape, nclass=nclass, class_names=class_names,
                              extra_meta=extra) as writer:
        read = 0
        for batch in records.read_records(source):
            mask = np.isin(batch['label'], keep)
            labels, raws = batch['label'][mask], batch['raw'][mask]
            if model is not None and len(labels):
                labels = new[labels + 1]
                # The label is inside each serialized record: write the records anew (source kept).
                raws = records.serialize_records(batch['image'][mask], labels,
                                              batch['source'][mask]).numpy()
            for raw, label in zip(raws.tolist(), labels.tolist()):
                writer.write_serialized(raw, label)
            read += len(mask)
            bar.update(len(mask))
        if not writer.count:
            # Raised inside the writer, so the empty output is discarded.
            raise UserError(f'no record of {source} has {what}; nothing written.')
    out = output_dataset(target)
    if model is not None and out and len(names.lineage(out[0])) == 1:
        # Derived datasets ({name}_mismatch{N}) find the mapping of {name} by themselves.
        names.write_class_mapping(out[0], class_names, out[2])
    return writer.count, read

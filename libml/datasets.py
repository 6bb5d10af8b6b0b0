"""What a dataset name means: resolved once into a Dataset that carries its files and facts.

A semi-supervised dataset `{name}.{seed}@{size}-{valid}` (the names: libml/names.py):
  labeled    = $ML_DATA/SSL/{name}.{seed}@{size}-label.tfrecord (all of it)
  validation = the first `valid` records of .../{name}.{seed}@{size}-unlabel.tfrecord
  unlabeled  = the other records of that file, except those derived from a validation image
               (a record's `source` feature, or its position when it has none, is < valid)
  test       = $ML_DATA/{name}-test.tfrecord, or that of the dataset it derives from
               ({name}_aug{N} -> {name})
A class-mismatch dataset ({name}_mismatch{N}, README 2.3) validates on the records with a label
among the first `valid`: its out-of-distribution images (label -1) have no class of the model, so
they are never validation images (nor training ones, being among the first `valid`).
A supervised dataset `{name}-{valid}` (the baselines): validation = the first `valid` records of
the train file (--train_record), training = the rest, test = --test_record.

`resolve` reads every file's metadata once and checks that the files agree (image shape, classes,
the flags --nclass/--img_size); the Dataset then carries the counts, shape and class names, so no
later step reads a metadata file again.
"""
import dataclasses
from typing import Optional

import numpy as np

from libml import names, pipeline, records
from libml.utils import UserError

# Images the evaluated model's batch-norm statistics are recomputed from (libml/train.py).
BN_STATS_IMAGES = 4096


@dataclasses.dataclass
class Part:
    """Records of one file used for one purpose.

    `count`: records in the file (its metadata). Records at positions >= `stop` are not read
    (None: read all). With `exclude_below` > 0, records whose origin (the `source` feature, else
    the position) is below it are dropped. With `labeled_only`, records without a label (-1) are
    dropped. `labels_known`: every record's label is known, from its metadata: a class, or -1
    for an image of none of the model's classes (a file filtered with a class map, e.g. the
    unlabeled files of section 2.3's mismatch experiment: -1 = out of distribution).
    """
    path: str
    count: int
    stop: Optional[int] = None
    exclude_below: int = 0
    labeled_only: bool = False
    labels_known: bool = False


@dataclasses.dataclass
class Dataset:
    """What the trainer reads: the parts and the facts of the data."""
    name: str
    labeled: Part
    unlabeled: Optional[Part]
    valid: Optional[Part]
    test: Part
    height: int
    width: int
    channels: int
    nclass: int
    class_names: Optional[list]

    @property
    def shape(self):
        return (self.height, self.width, self.channels)

    def eval_sets(self):
        """{'train_labeled', 'valid' (if any), 'test'} -> (uint8 images [N, H, W, C], int64
        labels [N]), in memory, labels checked against the class count."""
        sets = {'train_labeled': self.labeled, 'valid': self.valid, 'test': self.test}
        out = {}
        for name, part in sets.items():
            if part is None:
                continue
            out[name] = pipeline.load_arrays(part, self.shape)
            labels = out[name][1]
            if len(labels) and (labels.min() < 0 or labels.max() >= self.nclass):
                raise UserError(f'{part.path} has labels outside 0..{self.nclass - 1} ({name} '
                                'set); is it the right file for this dataset?')
        return out

    def batch_norm_images(self, labeled, seed):
        """The fixed training images an evaluated model's batch-norm statistics come from.

        Up to BN_STATS_IMAGES un-augmented images: the labeled images `labeled` [N, H, W, C] (a
        sample seeded by `seed` when there are more), then the first unlabeled training images
        (their file is class-interleaved, and an _aug file starts with the originals); never a
        validation or test image.
        """
        order = np.random.RandomState(seed).permutation(len(labeled))[:BN_STATS_IMAGES]
        parts = [labeled[np.sort(order)]]
        room = BN_STATS_IMAGES - len(order)
        if room > 0 and self.unlabeled is not None:
            parts.append(pipeline.load_arrays(self.unlabeled, self.shape, limit=room)[0])
        return np.concatenate(parts)


def resolve(name, supervised=None, nclass=0, img_size=0, class_mapping=None):
    """The Dataset of --dataset=`name`.

    supervised: None for `{name}.{seed}@{size}-{valid}`, or (train_record, test_record) for the
    baselines' `{name}-{valid}` (paths, or file names in $ML_DATA; None: the defaults).
    nclass, img_size: the flags (0: read from the data; another value must agree with it).
    class_mapping: --class_mapping, a JSON path or file name in $ML_DATA (None: the dataset's).
    """
    valid, files, mapped_names = names.dataset_files(name, supervised, class_mapping)
    meta = {key: records.read_meta(path, names.creation_hint(path)) for key, path in files.items()}
    first, cut = ('label', 'unlabel') if supervised is None else ('train', 'train')
    if valid >= meta[cut]['count']:
        raise UserError(f'--dataset={name}: {valid} validation images requested but {files[cut]} '
                        f'holds {meta[cut]["count"]} records; use a smaller -VALID.')
    shape = _common_shape(files, meta, first)
    if img_size and (img_size, img_size) != shape[:2]:
        raise UserError(f'--img_size={img_size} disagrees with the data: {name} holds '
                        f'{shape[0]}x{shape[1]} images. Drop the flag (it is read from the data).')
    class_names = (mapped_names if class_mapping else None) or meta[first].get('class_names') \
        or mapped_names
    nclass = _class_count(name, meta[first].get('nclass'), nclass, class_names)
    part = lambda key, **kw: Part(files[key], meta[key]['count'], labels_known=_labels_known(
        meta[key]), **kw)
    if supervised is None:
        labeled, unlabeled = part('label'), part('unlabel', exclude_below=valid)
    else:
        labeled, unlabeled = part('train', exclude_below=valid), None
    labeled_only = supervised is None and names.is_mismatch(name.split('.')[0])
    return Dataset(name=name, labeled=labeled, unlabeled=unlabeled,
                   valid=part(cut, stop=valid, labeled_only=labeled_only) if valid else None,
                   test=part('test'),
                   height=shape[0], width=shape[1], channels=shape[2], nclass=nclass,
                   class_names=class_names)


def _labels_known(meta):
    """Whether every record's label is known: no -1 in its metadata's label counts, or -1 only
    where the file's class map sent a known class (out of distribution, filter_dataset.py)."""
    counts = meta.get('label_counts')
    mapped_out = any(k == -1 for k in (meta.get('class_map') or {}).values())
    return bool(counts) and (mapped_out or all(int(label) >= 0 for label in counts))


def _common_shape(files, meta, first):
    """The (height, width, channels) of every file, which must agree."""
    shape_of = lambda m: (m['height'], m['width'], m['channels'])
    shape = shape_of(meta[first])
    for key, m in meta.items():
        if shape_of(m) != shape:
            raise UserError(f'{files[key]} holds {"x".join(map(str, shape_of(m)))} images but '
                            f'{files[first]} holds {"x".join(map(str, shape))}; recreate one of '
                            'them.')
    return shape


def _class_count(name, from_data, from_flag, class_names):
    if class_names and from_data and len(class_names) != from_data:
        raise UserError(f'dataset {name} has {from_data} classes but its class mapping names '
                        f'{len(class_names)}.')
    nclass = from_data or (len(class_names) if class_names else None)
    if from_flag and nclass and from_flag != nclass:
        raise UserError(f'--nclass={from_flag} disagrees with the data: {name} has {nclass} '
                        'classes. Drop the flag (it is read from the data).')
    nclass = nclass or from_flag
    if not nclass:
        raise UserError(f'cannot tell the class count of {name}; pass --nclass.')
    return nclass

"""Dataset names and where their files live under $ML_DATA. No TensorFlow here.

  {name}                         a dataset: letters, digits, underscore (never '-' or '.')
  {name}-{part}.tfrecord         under $ML_DATA: part = train, test, unlabeled (custom), extra (svhn)
  {name}.{seed}@{size}           a semi-supervised split, files under $ML_DATA/SSL/
  {name}.{seed}@{size}-{valid}   what the trainer reads: validation = the first `valid` records of
                                 the split's unlabeled file, training unlabeled = the rest
  {name}-{valid}                 what the supervised baselines read
  {name}_aug{N}, {name}_mismatch{N}  datasets derived from {name} (make_aug_copy.py, README 2.3):
                                 without a label or test file of their own they use {name}'s
  {name}_class_mappings.json     the class names, {"0": "cat", ...}
  X.tfrecord.json                the metadata of record file X (libml/records.py)
"""
import dataclasses
import os
import re

from libml.utils import UserError, ml_data
from libml.files import read_json, write_json

NAME_PATTERN = r'[A-Za-z0-9_]+'
_SSL_RE = re.compile(rf'^({NAME_PATTERN})\.(\d+)@(\d+)-(\d+)$')
_SPLIT_RE = re.compile(rf'^({NAME_PATTERN})\.(\d+)@(\d+)$')
_SUPERVISED_RE = re.compile(rf'^({NAME_PATTERN})-(\d+)$')
_AUG_SUFFIX_RE = re.compile(r'_aug\d+$')
# Suffixes of datasets derived from another: augmented copies (make_aug_copy.py) and the class
# mismatch subsets of README 2.3 (filter_dataset.py). Such a dataset may lack a label or test
# file of its own and use those of the dataset it derives from.
_DERIVED_SUFFIX_RE = re.compile(r'_(aug|mismatch)\d+$')


# ----------------------------------------------------------------------------------------------
# Names and paths.

def check_name(name, flag='--name'):
    """Rejects a dataset name that the name grammar could not parse back."""
    if not name or not re.fullmatch(NAME_PATTERN, name):
        raise UserError(f'{flag}={name!r}: a dataset name may hold only letters, digits and "_" '
                        '("-" separates the validation size and "." the seed), e.g. mydataset.')
    return name


@dataclasses.dataclass(frozen=True)
class SplitName:
    """`{name}.{seed}@{size}`, optionally with `-{valid}`."""
    name: str
    seed: int
    size: int
    valid: int = 0

    @property
    def stem(self):
        return f'{self.name}.{self.seed}@{self.size}'

    def __str__(self):
        return f'{self.stem}-{self.valid}'


def parse_ssl_name(text, flag='--dataset'):
    """Parses `name.seed@size-valid`, e.g. cifar10.3@250-5000."""
    m = _SSL_RE.match(text or '')
    if not m:
        raise UserError(f'{flag}={text!r} is not of the form NAME.SEED@SIZE-VALID '
                        '(e.g. cifar10.3@250-5000: seed 3, 250 labels, 5000 validation images).')
    return SplitName(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)))


def parse_split_name(text, flag='--aug_dataset'):
    """Parses `name.seed@size`, e.g. cifar10.1@250."""
    m = _SPLIT_RE.match(text or '')
    if not m:
        raise UserError(f'{flag}={text!r} is not of the form NAME.SEED@SIZE (e.g. cifar10.1@250).')
    return SplitName(m.group(1), int(m.group(2)), int(m.group(3)))


def parse_supervised_name(text, flag='--dataset'):
    """Parses `name-valid` for the supervised baselines; returns (name, valid)."""
    m = _SUPERVISED_RE.match(text or '')
    if not m:
        raise UserError(f'{flag}={text!r} is not of the form NAME-VALID (e.g. mydataset-50: 50 '
                        'validation images); NAME may not contain "-" or ".".')
    return m.group(1), int(m.group(2))


def base_name(name):
    """The dataset a derived name comes from: cifar10_aug50 -> cifar10, cifar6_mismatch50_aug2 -> cifar6."""
    return lineage(name)[-1]


def lineage(name):
    """`name` and the datasets it derives from: cifar6_mismatch50_aug2 -> [that, cifar6_mismatch50, cifar6]."""
    names = [name]
    while _DERIVED_SUFFIX_RE.search(names[-1]):
        names.append(_DERIVED_SUFFIX_RE.sub('', names[-1]))
    return names


def is_mismatch(name):
    """Whether `name` is, or derives from, a class-mismatch dataset `{name}_mismatch{N}` (README
    2.3), whose unlabeled records include out-of-distribution images (label -1)."""
    return any(re.search(r'_mismatch\d+$', n) for n in lineage(name))


def record_path(name, part, root=None):
    """$ML_DATA/{name}-{part}.tfrecord (part: train, test, unlabeled, extra)."""
    return os.path.join(root or ml_data(), f'{name}-{part}.tfrecord')


def split_path(stem, part, root=None):
    """$ML_DATA/SSL/{stem}-{part}.tfrecord (part: label, unlabel)."""
    return os.path.join(root or ml_data(), 'SSL', f'{stem}-{part}.tfrecord')


def split_map_path(stem, root=None):
    """$ML_DATA/SSL/{stem}-map.json: the record ids of each part of a split."""
    return os.path.join(root or ml_data(), 'SSL', f'{stem}-map.json')


def find_label_file(split, root=None):
    """The label file of split `split` (a SplitName): its own, else that of the dataset it derives
    from (cifar6_mismatch50.1@250 -> cifar6.1@250-label.tfrecord, as README 2.3 makes them)."""
    for candidate in lineage(split.name):
        path = split_path(f'{candidate}.{split.seed}@{split.size}', 'label', root)
        if os.path.exists(path):
            return path
    path = split_path(split.stem, 'label', root)
    raise UserError(f'{path} does not exist; {creation_hint(path)}')


def dataset_files(dataset, supervised=None, class_mapping=None):
    """What the name --dataset=`dataset` points at, all at once: (valid, files, class_names).

    valid: the -VALID part. files: {'label', 'unlabel', 'test'} for `{name}.{seed}@{size}-{valid}`
    (the label and test files may be those of the dataset it derives from, see `lineage`), or
    {'train', 'test'} for the baselines' `{name}-{valid}`, where `supervised` is (train_record,
    test_record): paths or file names in $ML_DATA, None for `{name}-train/test.tfrecord`.
    class_names: from --class_mapping=`class_mapping` if given, else from the dataset's
    `{name}_class_mappings.json` (or its base's), else None.
    """
    if not dataset:
        raise UserError('--dataset is required, e.g. --dataset=cifar10.3@250-5000.')
    if supervised is None:
        split = parse_ssl_name(dataset)
        base, valid = split.name, split.valid
        files = {'label': find_label_file(split), 'unlabel': split_path(split.stem, 'unlabel'),
                 'test': find_test_file(split.name)}
    else:
        base, valid = parse_supervised_name(dataset)
        files = {}
        for key, flag, given in zip(('train', 'test'), ('--train_record', '--test_record'),
                                    supervised):
            files[key] = os.path.join(ml_data(), given or f'{base}-{key}.tfrecord')
            if given:  # a folder or an unreadable file is named with the flag that gave it
                require_file(files[key], creation_hint(files[key]), f'{flag}={given}')
    class_names = read_class_mapping(class_mapping) if class_mapping else read_class_names(base)
    return valid, files, class_names


def read_class_mapping(path):
    """Class names from --class_mapping: a path, or a bare file name found in $ML_DATA."""
    if not os.path.exists(path) and os.path.exists(os.path.join(ml_data(), path)):
        path = os.path.join(ml_data(), path)
    if not os.path.exists(path):
        raise UserError(f'--class_mapping={path}: no such file (looked here and in $ML_DATA).')
    return class_names_from_mapping(read_json(path, 'class mapping'), path)


def class_mapping_path(name, root=None):
    """$ML_DATA/{name}_class_mappings.json: {"0": "airplane", ...}."""
    return os.path.join(root or ml_data(), f'{name}_class_mappings.json')


def meta_path(path):
    return path + '.json'


def find_test_file(name, root=None):
    """The test records of dataset `name`: its own, else those of the dataset it derives from."""
    for candidate in lineage(name):
        path = record_path(candidate, 'test', root)
        if os.path.exists(path):
            return path
    raise UserError(f'no test file for dataset {name}: expected {record_path(name, "test", root)}; '
                    'create it with scripts/create_datasets.py.')


def read_class_names(name, root=None):
    """Class names of dataset `name` from its class mapping (or its base's), else None."""
    for candidate in lineage(name):
        path = class_mapping_path(candidate, root)
        if os.path.exists(path):
            return class_names_from_mapping(read_json(path, 'class mapping'), path)
    return None


def class_names_from_mapping(mapping, path):
    """{"0": "cat", "1": "dog"} -> ["cat", "dog"]; keys must be 0..K-1."""
    try:
        keys = sorted(int(k) for k in mapping)
    except (TypeError, ValueError, AttributeError):
        raise UserError(f'class mapping {path} must map class indices to names, '
                        'e.g. {"0": "cat", "1": "dog"}.') from None
    if keys != list(range(len(keys))):
        raise UserError(f'class mapping {path} must have the keys 0..{len(keys) - 1} exactly.')
    return [str(mapping[str(k)] if str(k) in mapping else mapping[k]) for k in keys]


def write_class_mapping(name, class_names, root=None):
    path = class_mapping_path(name, root)
    write_json(path, {str(i): c for i, c in enumerate(class_names)})
    return path


def require_file(path, hint, flag=None):
    """A UserError for a record file that is missing (with `hint`: the command that creates it),
    a folder, or unreadable. `flag`, e.g. '--train_record=x', is named first when given."""
    where = f'{flag}: ' if flag else ''
    if not os.path.exists(path):
        raise UserError(f'{where}{path} does not exist; {hint}')
    if os.path.isdir(path):
        raise UserError(f'{where}{path} is a folder, not a record file; give the path of a '
                        '.tfrecord file.')
    if not os.access(path, os.R_OK):
        raise UserError(f'{where}{path} is not readable (permission denied); fix its permissions '
                        'or give another file.')
    return path


def check_output_name(name, where='--dataset'):
    """`name`, checked to be safe as the stem of the output files {name}_pred.npy/.csv.

    Outputs go inside the output folder only: a name with a path separator or ".." (e.g.
    `--dataset=../escape/x`) is a UserError naming `where` (a flag or a file).
    """
    separators = {'/', '\\', os.sep, os.altsep} - {None}
    if not name or '..' in name or '\0' in name or any(s in name for s in separators):
        raise UserError(f'{where}={name}: a dataset name may not be empty or contain "/", "\\" or '
                        '"..": the outputs {dataset}_pred.npy and .csv are written inside '
                        '--inference_out.')
    return name


# ----------------------------------------------------------------------------------------------
# Augmentation presets (libml/augment.py implements them; their names are checked without TensorFlow).

PRESETS = ('cifar10', 'svhn', 'stl10', 'color', 'cutout', 'none')
ALIASES = {'stl-10': 'stl10'}


def check_preset(name, flag='--augment'):
    """The canonical name of preset `name` (`stl-10` -> `stl10`); UserError listing valid ones."""
    canonical = ALIASES.get(name, name)
    if canonical not in PRESETS:
        valid = ', '.join(PRESETS + tuple(ALIASES))
        raise UserError(f'{flag}={name!r} is not an augmentation; valid: {valid}.')
    return canonical


# ----------------------------------------------------------------------------------------------
# Errors about missing files.

PUBLIC_DATASETS = ('digits', 'cifar10', 'cifar100', 'svhn', 'stl10')


def creation_hint(path):
    """Which command creates the record file `path`, for "does not exist" errors (see require_file)."""
    base = os.path.basename(path)
    m = re.fullmatch(rf'({NAME_PATTERN})\.(\d+)@(\d+)-(label|unlabel)\.tfrecord', base)
    if m:
        name, seed, size = m.group(1), m.group(2), m.group(3)
        aug = _AUG_SUFFIX_RE.search(name)
        if aug:
            return (f'create it with scripts/make_aug_copy.py --aug_dataset={name[:aug.start()]}.'
                    f'{seed}@{size} --aug_copy={aug.group(0)[4:]}.')
        return (f'create it with scripts/create_split.py, e.g. scripts/create_split.py --seed={seed} '
                f'--label_split_size={size} $ML_DATA/SSL/{name} $ML_DATA/{name}-train.tfrecord.')
    m = re.fullmatch(rf'({NAME_PATTERN})-(train|test|unlabeled|extra)\.tfrecord', base)
    if m and m.group(1) in PUBLIC_DATASETS:
        return f'create it with scripts/create_datasets.py {m.group(1)}.'
    if m:
        return (f'create it with scripts/create_datasets.py custom --name {m.group(1)} --traindir ... '
                '--testdir ... [--unlabeldir ...] (or filter_dataset.py for a filtered copy).')
    return 'create it with scripts/create_datasets.py, scripts/create_split.py or filter_dataset.py.'

"""Predicting a folder of images with a trained run's EMA weights (`--perform_inference`).

    result = run_inference('experiments/cifar10.3@250-5000/RealMix_.../tf/model.ckpt-00065536',
                           'images/', out_dir='.', dataset_name='cifar10.3@250-5000')

The folder (`inference_dir`) is either
- flat: images directly in it; labels are unknown, only predictions are written; or
- one sub-folder per class (images may sit deeper inside a class folder); labels are known and
  the accuracy is printed. Which class a sub-folder is, in this order of rules:
  1. the run has class names (args.json "class_names") and every sub-folder name is one of them:
     by name;
  2. every sub-folder name is a class index (`0`, `1`, ... below the run's class count): by index;
  3. the run has no class names and there are exactly as many sub-folders as classes: the
     sub-folders in sorted order are classes 0, 1, ... (the order in which create_datasets.py
     numbers the classes of a custom dataset); this is said on the console;
  otherwise it is an error naming the sub-folders that are not classes of the model.
  A folder holding both images and class sub-folders is an error (the labels would be ambiguous).
  Sub-folders without images are ignored.

Files, order and pixels: as every tool of the project (libml/folders.py lists, libml/images.py
decodes): unusable files (not images, not regular files, undecodable, above `max_pixels`) are
skipped and listed; rows follow the natural order of the relative paths; the pixels are exactly
those create_datasets.py writes for the same file.

Outputs (written atomically, complete or absent), in `out_dir`, by default the current directory
(the README says the command "generates {dataset}_pred.npy"; the trainer's `--inference_out`
sets another folder), named after the dataset name, which may not contain a path separator or
"..":
  {dataset}_pred.npy  float32 [N, nclass]: softmax probabilities of the EMA model, rows in the
                      order above;
  {dataset}_pred.csv  columns file, predicted, probability, true: the file relative to
                      inference_dir, the predicted class and its probability, the true class
                      (empty when unknown). Classes are names when the run knows them, else
                      indices.
"""
import csv
import os
import unicodedata
import weakref

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from libml import export, folders, images, names, runs
from libml.utils import UserError, check_interrupted
from libml.files import atomic_output

_LISTED = 10  # how many file names a message lists before "and N more"


def _some(items, n=_LISTED, sep=', '):
    """'a, b, c and 7 more': a readable list of at most n items."""
    items = list(items)
    text = sep.join(str(i) for i in items[:n])
    return text + (f' and {len(items) - n} more' if len(items) > n else '')


# ----------------------------------------------------------------------------------------------
# Listing a folder.

def _nfc(name):
    return unicodedata.normalize('NFC', name)


def _folder_labels(subfolders, class_names, nclass):
    """{sub-folder: class index} and the class names of those indices (see the module doc)."""
    known = [_nfc(c) for c in class_names] if class_names else None
    if known and all(_nfc(f) in known for f in subfolders):
        return {f: known.index(_nfc(f)) for f in subfolders}, list(class_names), None
    if all(f.isascii() and f.isdigit() for f in subfolders):
        too_big = [f for f in subfolders if nclass is not None and int(f) >= nclass]
        if too_big:
            raise UserError(f'class folder(s) {_some(too_big)} are not class indices of the model '
                            f'(0..{nclass - 1}).')
        return ({f: int(f) for f in subfolders}, list(class_names) if class_names else None,
                'class subfolders named by class index')
    if known:
        unknown = sorted(f for f in subfolders if _nfc(f) not in known)
        raise UserError(f'class folder(s) {_some(unknown)} are not classes of the model; its '
                        f'classes are {_some(class_names, 20)} (name each folder after its class, '
                        'or by class index).')
    ordered = sorted(subfolders)
    if nclass is not None and len(subfolders) != nclass:
        raise UserError(f'the run has no class known and there are {len(subfolders)} class subfolders '
                        f'({_some(ordered)}) for its {nclass} classes, so which class each folder '
                        f'is cannot be told: name the subfolders by class index (0..{nclass - 1}) or '
                        'put the images in one flat folder (predictions only).')
    note = None
    if nclass is not None:
        note = (f'the run has no class known: the {len(ordered)} class subfolders, in sorted order, '
                f'are taken as classes 0..{len(ordered) - 1}')
    return {f: i for i, f in enumerate(ordered)}, ordered, note


def list_images(folder, class_names=None, nclass=None, max_pixels=images.MAX_IMAGE_PIXELS):
    """The images of `folder`, flat or in class sub-folders (rules in the module doc).

    class_names, nclass: the model's (to map class folders to class indices); both None maps
    class folders, sorted, to 0, 1, ... (folders named by numbers: to those numbers).
    Returns (paths, labels, class_names, skipped):
      paths        absolute paths, in the shared natural order (libml/images.py);
      labels       int64 [N] class indices, or None for a flat folder;
      class_names  names of the class indices, or None (flat folder, or unnamed classes);
      skipped      [(path relative to folder, reason)] of the files that are not usable images.
    Each image's header is read (in parallel threads); an image whose header is fine and whose
    data is not is caught when it is decoded (`load_images`, `predict_files`).
    """
    folder = os.path.normpath(os.path.expanduser(folder))
    if not os.path.isdir(folder):
        what = 'is not a folder' if os.path.exists(folder) else 'does not exist'
        raise UserError(f'image folder {folder} {what}.')
    listing = folders.list_images(folder)
    top_images = [rel for rel in listing.images if '/' not in rel]
    class_folders = list(dict.fromkeys(folders.class_of(rel, numbered_names=False)
                                       for rel in listing.images if '/' in rel))
    if top_images and class_folders:
        raise UserError(f'{folder} holds both images ({_some(top_images[:3])}) and class folders '
                        f'({_some(sorted(class_folders))}): put every image in a class folder, or '
                        'use a flat folder of images.')
    names = None
    if class_folders:
        mapping, names, note = _folder_labels(sorted(class_folders), class_names, nclass)
        if note:
            print(f'{folder}: {note}.')
    infos = images.probe_all([listing.path(rel) for rel in listing.images], max_pixels,
                             upright=False)
    skipped, paths, labels = list(listing.skipped), [], []
    for rel, info in zip(listing.images, infos):
        if isinstance(info, images.ImageError):
            skipped.append((rel, str(info)))
        else:
            paths.append(listing.path(rel))
            labels.append(mapping[folders.class_of(rel, numbered_names=False)]
                          if class_folders else -1)
    skipped.sort(key=lambda item: folders.natural_key(item[0]))
    labels = np.array(labels, np.int64) if class_folders else None
    return paths, labels, names, skipped


# ----------------------------------------------------------------------------------------------
# Decoding (libml/images.py), batched for the model.

def _pixel_batches(paths, height, width, channels, batch_size, max_pixels):
    """(tf.data of (row indices int64 [b], float32 images [b, H, W, C]), {row: reason}).

    Images are decoded in parallel ahead of the consumer; those that cannot be used are left
    out (their rows are missing from the batches, their reasons in the dict once iterated).
    """
    ds, failures = images.pixel_dataset(paths, height, width, channels, max_pixels)
    ds = ds.batch(batch_size).map(lambda rows, x: (rows, tf.cast(x, tf.float32)))
    return ds.prefetch(2), failures


def load_images(paths, height, width, channels, batch_size=256,
                max_pixels=images.MAX_IMAGE_PIXELS):
    """Decodes `paths` in parallel -> uint8 [N, height, width, channels], rows in `paths` order:
    the very pixels `predict_files` feeds the model (libml/images.py).

    A file that cannot be decoded is a UserError naming it (`list_images` has already left out
    most such files).
    """
    out = np.zeros([len(paths), height, width, channels], np.uint8)
    if paths:
        batches, failures = _pixel_batches(paths, height, width, channels, batch_size, max_pixels)
        for rows, pixels in batches:
            check_interrupted()
            out[rows.numpy()] = pixels.numpy().astype(np.uint8)
        if failures:
            raise UserError('cannot decode ' + _some(
                f'{paths[row]} ({reason})' for row, reason in sorted(failures.items())) + '.')
    return out


# ----------------------------------------------------------------------------------------------
# Prediction.

_prob_functions = weakref.WeakKeyDictionary()


def probability_function(model, height, width, channels, jit_compile=False):
    """A tf.function: float32 [B, H, W, C] in [0, 255] -> softmax float32 [B, nclass] (EMA model
    in inference mode). One trace serves every batch size; cached per model and shape.
    An exported SavedModel (export.ExportedModel) brings its own function."""
    if isinstance(model, export.ExportedModel):
        return model.probability_function(height, width, channels)
    key = (height, width, channels, jit_compile)
    cache = _prob_functions.setdefault(model, {})
    if key not in cache:
        ref = weakref.ref(model)  # the cache must not keep the model alive
        cache[key] = tf.function(
            lambda x: tf.nn.softmax(ref()(x, training=False), axis=-1),
            input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32)],
            jit_compile=jit_compile, autograph=False)  # plain tensor code
    return cache[key]


def predict(model, pixels, batch_size=256):
    """Softmax probabilities float32 [N, nclass] of images [N, H, W, C] (uint8 or float in [0, 255]).

    `pixels` may also be a tf.data.Dataset of such batches (e.g. decoded in parallel while the
    model runs). Batches go through one traced tf.function, whatever the last batch's size.
    """
    if isinstance(pixels, tf.data.Dataset):
        shape = pixels.element_spec.shape
        fn = probability_function(model, *shape[1:].as_list())
        out = [fn(tf.cast(x, tf.float32)).numpy() for x in pixels]
    else:
        pixels = np.asarray(pixels)
        if pixels.ndim != 4:
            raise ValueError(f'images must be [N, H, W, C], not {list(pixels.shape)}.')
        fn = probability_function(model, *pixels.shape[1:])
        out = [fn(tf.constant(pixels[i:i + batch_size], tf.float32)).numpy()
               for i in range(0, len(pixels), batch_size)]
    if not out:
        return np.zeros([0, int(getattr(model, 'nclass', 0))], np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def predict_files(model, paths, height, width, channels, batch_size=256, progress=True,
                  max_pixels=images.MAX_IMAGE_PIXELS):
    """Decodes `paths` (in parallel, ahead of the model; libml/images.py) and predicts them.

    Returns (probabilities float32 [M, nclass], rows int64 [M]): `rows` are the indices into
    `paths` of the images that decoded (M <= N, order kept).
    """
    fn = probability_function(model, height, width, channels)
    probs, rows = [], []
    with tqdm(total=len(paths), unit='img', desc='predicting', leave=False, dynamic_ncols=True,
              disable=not progress) as bar:
        if paths:
            batches, _ = _pixel_batches(paths, height, width, channels, batch_size, max_pixels)
            for index, pixels in batches:
                check_interrupted()
                probs.append(fn(pixels).numpy())
                rows.append(index.numpy())
                bar.update(len(rows[-1]))
    if not probs:
        return np.zeros([0, int(getattr(model, 'nclass', 0))], np.float32), np.zeros([0], np.int64)
    return np.concatenate(probs), np.concatenate(rows)


def _class_label(index, class_names):
    return class_names[index] if class_names and 0 <= index < len(class_names) else str(index)


def run_inference(ckpt, inference_dir, out_dir=None, dataset_name=None, batch_size=256,
                  progress=True, max_pixels=images.MAX_IMAGE_PIXELS):
    """Predicts every image of `inference_dir` with the EMA weights of checkpoint `ckpt`.

    ckpt: RUN/tf/model.ckpt-NNNNNNNN, RUN/tf or RUN (its newest checkpoint), or a folder written
    by scripts/export_model.py (its SavedModel and the args.json beside it; libml/export.py).
    out_dir: where {dataset_name}_pred.npy and .csv go; None = the current directory.
    dataset_name: None = the run's dataset (args.json "dataset"); given, it is --dataset's value
    (a name with a path separator or ".." is a UserError naming --dataset).
    max_pixels: larger images are skipped (libml/images.py; --max_image_pixels).
    Prints the skipped files, the accuracy when the folder has class sub-folders, and where the
    outputs are. Returns {'accuracy': percent or None, 'n': rows, 'npy': path, 'csv': path,
    'skipped': [(file, reason)], 'checkpoint': prefix}.
    """
    exported = export.is_saved_model(ckpt)
    if exported:
        prefix = run_dir = os.path.abspath(os.path.expanduser(ckpt))
        args = export.read_export_args(prefix)
    else:
        prefix, run_dir = runs.resolve_checkpoint(ckpt)
        args = runs.read_args(run_dir)
    if dataset_name:
        names.check_output_name(dataset_name, '--dataset')
    elif args.get('dataset'):
        dataset_name = names.check_output_name(
            args['dataset'], f'"dataset" of {os.path.join(run_dir, "args", "args.json")}')
    else:
        dataset_name = names.check_output_name(os.path.basename(run_dir), 'the run folder')
    h, w, c, nclass = (int(args[k]) for k in ('height', 'width', 'channels', 'nclass'))
    run_names = args.get('class_names') or None
    root = os.path.abspath(os.path.expanduser(inference_dir))
    rel = lambda path: os.path.relpath(path, root).replace(os.sep, '/')
    paths, labels, folder_names, skipped = list_images(root, run_names, nclass, max_pixels)
    if not paths:
        listed = f' (skipped {_some(f"{f}: {r}" for f, r in skipped)})' if skipped else ''
        raise UserError(f'no PNG or JPEG images in {root}{listed}.')
    out_dir = os.path.abspath(out_dir or '.')

    model = export.ExportedModel(prefix) if exported else runs.restore_ema(prefix, args)
    print(f'Predicting {len(paths)} images of {root} with '
          f'{"the exported model" if exported else "the EMA weights of"} {prefix} '
          f'({runs.describe(args)}).')
    probs, rows = predict_files(model, paths, h, w, c, batch_size, progress, max_pixels)
    if len(rows) < len(paths):
        failed = sorted(set(range(len(paths))) - set(rows.tolist()))
        skipped += [(rel(paths[i]), 'cannot be decoded') for i in failed]
        paths = [paths[i] for i in rows]
        labels = labels[rows] if labels is not None else None
    skipped.sort(key=lambda item: folders.natural_key(item[0]))
    if skipped:
        print(f'Skipped {len(skipped)} file(s): '
              + _some((f'{f}: {r}' for f, r in skipped), sep='; ') + '.')
    if not paths:
        raise UserError(f'none of the images in {root} could be decoded.')

    shown_names = run_names or folder_names
    predicted = probs.argmax(1)
    accuracy = None
    if labels is not None:
        correct = predicted == labels
        accuracy = 100.0 * float(correct.mean())
        print(f'Accuracy {accuracy:.2f}% ({int(correct.sum())} of {len(labels)} images).')
        for k in np.unique(labels):
            mask = labels == k
            print(f'  {_class_label(int(k), shown_names):<20s} {100.0 * correct[mask].mean():6.2f}%  '
                  f'({int(correct[mask].sum())}/{int(mask.sum())})')

    npy_path = os.path.join(out_dir, f'{dataset_name}_pred.npy')
    csv_path = os.path.join(out_dir, f'{dataset_name}_pred.csv')
    with atomic_output(npy_path) as tmp:
        with open(tmp, 'wb') as f:  # np.save(path) would add a second ".npy" to the temporary name
            np.save(f, probs.astype(np.float32))
    with atomic_output(csv_path) as tmp:
        with open(tmp, 'w', newline='', encoding='utf-8') as f:
            writer = csv.writer(f)
            writer.writerow(['file', 'predicted', 'probability', 'true'])
            for i, path in enumerate(paths):
                true = _class_label(int(labels[i]), shown_names) if labels is not None else ''
                writer.writerow([rel(path), _class_label(int(predicted[i]), shown_names),
                                 f'{probs[i, predicted[i]]:.6f}', true])
    print(f'Predictions ({len(paths)} x {probs.shape[1]} probabilities, rows in natural file '
          f'order): {npy_path}\nPer file: {csv_path}')
    return {'accuracy': accuracy, 'n': len(paths), 'npy': npy_path, 'csv': csv_path,
            'skipped': skipped, 'checkpoint': prefix}

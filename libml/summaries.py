"""What a run shows in TensorBoard besides its scalar tags (README, "Monitoring").

- HParams: RUN/hparams/ holds the run's hyper-parameters (an HParams session) and, at each
  evaluation, its evaluated accuracies as `hparams/accuracy_test` and `hparams/accuracy_valid`. A
  folder of its own, because the HParams dashboard takes every scalar tag of a session's folder as
  a metric: so its table and parallel-coordinates view show these two, not the forty tags of
  RUN/tf. Tags of their own, so the scalars dashboard does not draw each accuracy twice.
- Images (RUN/tf, unless --noimage_summaries): `inputs/*` once at the start of a run (not on
  resume), the training images as the model receives them, one grid per view; at each evaluation
  `eval/confusion_matrix` and `eval/confident_errors` (the test images the model gets most
  confidently wrong, with true and predicted class names). A few images per evaluation.
- Collapse monitors (RUN/tf, every semi-supervised method): from the entries `guess`, `mask` and
  `labeled_mask` an algorithm's loss may return (libml/algorithm.py), averaged over each report
  period: `collapse/guessed_classes` (a histogram, one bucket per class),
  `collapse/largest_class_share`, `collapse/guess_entropy` (of that class histogram, divided by
  log K: 1 = even, 0 = one class), `collapse/mask_rate` (unlabeled examples that pass the method's
  mask) and `collapse/tsa_kept` (labeled examples TSA keeps); and a console warning when one class
  takes more than --collapse_share of the guesses for --collapse_reports reports in a row.
- Out-of-distribution monitors (RUN/tf, a method with a `mask`, trained on an unlabeled file whose
  labels are all known, some -1 = out of distribution: benchmarks/mismatch.py's data): per report
  period, `ood/share` (unlabeled examples out of distribution), `ood/mask_precision` (of the
  examples the mask drops, the share out of distribution; chance = ood/share) and
  `ood/mask_recall` (of the out-of-distribution examples, the share dropped; chance = the drop
  rate). Ratios of the period's sums; not written in a period without out-of-distribution images.
"""
import glob
import math
import os

import numpy as np
import tensorflow as tf
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.hparams import api as hp

# The per-example entries of an algorithm's summaries (the contract) become the collapse monitors.
from libml.algorithm import GUESS, LABELED_MASK, MASK

CLASS_COUNTS = 'collapse/class_counts'  # per step and replica, averaged over a period
# Shares of the unlabeled examples, per step, averaged over a period: dropped by the mask and out
# of distribution, dropped, out of distribution (their ratios are the precision and recall).
OOD_SHARES = ('ood/dropped_and_ood', 'ood/dropped', 'ood/ood')

HPARAMS_FOLDER = 'hparams'
HPARAMS_METRICS = {'hparams/accuracy_test': 'accuracy_test',     # tag: evaluation result
                   'hparams/accuracy_valid': 'accuracy_valid'}
ERRORS_SHOWN = 8       # test images in eval/confident_errors
INPUTS_SHOWN = 32      # images per grid of inputs/*
MIN_CELL = 48          # pixels: small images (digits are 8x8) are enlarged to at least this


# -- collapse monitors ---------------------------------------------------------------------------

def collapse_tensors(summaries, nclass, u_label=None):
    """Removes the per-example entries from an algorithm's `summaries` (a dict, changed in place)
    and returns fixed-size tensors for them, to be averaged over steps like the scalars.
    u_label: int [U], the unlabeled batch's true labels (-1 = out of distribution), if known."""
    out = {}
    guess = summaries.pop(GUESS, None)
    if guess is not None:
        out[CLASS_COUNTS] = tf.reduce_sum(tf.one_hot(tf.argmax(guess, 1), nclass), 0)
    for key, tag in ((MASK, 'collapse/mask_rate'), (LABELED_MASK, 'collapse/tsa_kept')):
        mask = summaries.pop(key, None)
        if mask is not None:
            out[tag] = tf.reduce_mean(tf.cast(mask, tf.float32))
            if key == MASK and u_label is not None:
                out.update(ood_shares(tf.cast(mask, tf.float32), u_label))
    return out


def ood_shares(mask, u_label):
    """OOD_SHARES of one step. mask [n * U] (n views of the U unlabeled images, view-major, as
    RealMix masks its mixed views), u_label [U]."""
    views = tf.shape(mask)[0] // tf.shape(u_label)[0]
    ood = tf.cast(tf.tile(u_label < 0, [views]), tf.float32)
    dropped = 1 - mask
    return dict(zip(OOD_SHARES, (tf.reduce_mean(dropped * ood), tf.reduce_mean(dropped),
                                 tf.reduce_mean(ood))))


def write_ood(means):
    """Pops OOD_SHARES from a report period's `means` and writes the ood/* scalars; returns
    {'share', 'precision', 'recall'} (the ones defined) or None."""
    shares = [means.pop(k, None) for k in OOD_SHARES]
    if shares[0] is None or not shares[2] > 0:
        return None
    dropped_ood, dropped, ood = (float(v) for v in shares)
    out = {'share': ood, 'recall': dropped_ood / ood}
    if dropped > 0:
        out['precision'] = dropped_ood / dropped
    for name, value in out.items():
        tf.summary.scalar(f'ood/mask_{name}' if name != 'share' else 'ood/share', value)
    return out


def class_share(counts):
    """Shares of the classes (summing to 1) from mean counts; a uniform share if all are 0."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    return counts / total if total > 0 else np.full(len(counts), 1 / len(counts))


def guess_entropy(share):
    """Entropy of a class share divided by log K: 1 for an even share, 0 for one class."""
    share = np.asarray(share, np.float64)
    if len(share) < 2:
        return 0.0
    nonzero = share[share > 0]
    return float(-(nonzero * np.log(nonzero)).sum() / math.log(len(share)))


def write_collapse(counts):
    """The collapse monitors of one report period (in the default writer, at its step)."""
    share = class_share(counts)
    tf.summary.scalar('collapse/largest_class_share', float(share.max()))
    tf.summary.scalar('collapse/guess_entropy', guess_entropy(share))
    # One bucket per class, [left edge, right edge, count], as the histogram plugin stores them:
    # tf.summary.histogram would spread its buckets over the range of the data instead.
    k = np.arange(len(share), dtype=np.float64)
    buckets = np.stack([k - 0.5, k + 0.5, share], axis=1)
    metadata = histogram_metadata.create_summary_metadata(
        'collapse/guessed_classes', 'Share of the unlabeled batch guessed as each class')
    tf.summary.write('collapse/guessed_classes', buckets, metadata=metadata.SerializeToString())
    return share


def default_collapse_share(nclass):
    """Halfway between an even share and one class: 0.55 for 10 classes, 0.75 for 2."""
    return (1 + 1 / nclass) / 2


class CollapseWatch:
    """Says (one console line) when one class takes more than `share` of the guesses for
    `reports` reports in a row."""

    def __init__(self, share, reports, class_names):
        self.share, self.reports, self.class_names = share, reports, class_names
        self.streak = 0

    def update(self, shares):
        """shares: the class share of the last report. Returns the warning, or None."""
        top = int(np.argmax(shares))
        self.streak = self.streak + 1 if shares[top] > self.share else 0
        if self.streak < self.reports:
            return None
        name = self.class_names[top] if self.class_names else str(top)
        return (f'warning: class {name!r} took {100 * shares[top]:.0f}% of the guessed labels '
                f'in each of the last {self.streak} reports (--collapse_share={self.share:.2f}): '
                'the method may be collapsing onto one class; see collapse/* in TensorBoard.')


# -- images -------------------------------------------------------------------------------------

def tile(images, columns=8, min_cell=MIN_CELL):
    """uint8 [N, H, W, C] -> one uint8 [1, rows*h, columns*w, C] grid (1-pixel gaps), each image
    enlarged by a whole factor to at least `min_cell` pixels (nearest neighbour: pixels stay
    visible)."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    scale = max(1, -(-min_cell // min(h, w)))
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    h, w = h * scale, w * scale
    columns = min(columns, n)
    rows = -(-n // columns)
    grid = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1, c), 255, np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[r * (h + 1):r * (h + 1) + h, col * (w + 1):col * (w + 1) + w] = image
    return grid[None]


def write_inputs(batch, views):
    """inputs/labeled and inputs/unlabeled_{i}_{view}: what the model receives in one step."""
    tf.summary.image('inputs/labeled', tile(batch['x'][:INPUTS_SHOWN]),
                     description='Labeled training images after augmentation (first step)')
    if 'u' in batch:
        for i, (images, view) in enumerate(zip(batch['u'], views), 1):
            tf.summary.image(f'inputs/unlabeled_{i}_{view}', tile(images[:INPUTS_SHOWN]),
                             description=f'Unlabeled view {i} ({view} augmentation), first step')


def _figure_pixels(figure):
    """A matplotlib figure -> uint8 [1, H, W, 3] (rendered with Agg: no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[None, :, :, :3].copy()


def confusion_pixels(labels, predicted, class_names):
    """The confusion matrix (rows: true class, columns: predicted; counts), as an image."""
    from matplotlib.figure import Figure
    from sklearn.metrics import confusion_matrix
    k = len(class_names)
    matrix = confusion_matrix(labels, predicted, labels=np.arange(k))
    # TensorBoard shows an image about 400 pixels wide: a small figure keeps the names legible.
    size = min(12, 2.5 + 0.3 * k)
    figure = Figure(figsize=(size, size), dpi=80)
    axes = figure.add_subplot()
    axes.imshow(matrix, cmap='Blues')
    ticks = np.arange(k)
    labels_shown = k <= 40  # more names would overlap
    axes.set_xticks(ticks, class_names if labels_shown else [], rotation=90, fontsize=9)
    axes.set_yticks(ticks, class_names if labels_shown else [], fontsize=9)
    axes.set_xlabel('predicted')
    axes.set_ylabel('true')
    if k <= 20:
        limit = matrix.max() / 2
        for (t, p), count in np.ndenumerate(matrix):
            axes.text(p, t, str(count), ha='center', va='center', fontsize=8,
                      color='white' if count > limit else 'black')
    figure.tight_layout()
    return _figure_pixels(figure)


def confident_errors(labels, probs, count=ERRORS_SHOWN):
    """Indices of the `count` wrongly classified examples with the highest predicted
    probability, most confident first (ties: lower index first)."""
    predicted = probs.argmax(1)
    wrong = np.flatnonzero(predicted != labels)
    return wrong[np.argsort(-probs[wrong, predicted[wrong]], kind='stable')[:count]]


def confident_errors_pixels(pixels, labels, probs, class_names, count=ERRORS_SHOWN):
    """The `count` wrongly classified images with the highest predicted probability, each titled
    'true NAME / predicted NAME P'; None if every image is right."""
    chosen = confident_errors(labels, probs, count)
    if not len(chosen):
        return None
    predicted = probs.argmax(1)
    from matplotlib.figure import Figure
    # Two columns: TensorBoard shows an image about 400 pixels wide, so a row of eight would
    # shrink the names below legibility.
    rows = -(-len(chosen) // 2)
    figure = Figure(figsize=(4.0, 2.0 * rows), dpi=80)
    for i, index in enumerate(chosen, 1):
        axes = figure.add_subplot(rows, 2, i)
        image = pixels[index]
        axes.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap='gray',
                    interpolation='nearest', vmin=0, vmax=255)
        axes.set_title(f'true {class_names[labels[index]]}\npredicted '
                       f'{class_names[predicted[index]]} {probs[index, predicted[index]]:.2f}',
                       fontsize=10)
        axes.axis('off')
    # Fixed margins: tight_layout measured every title and took most of the time.
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.5 / rows / 2.0,
                           hspace=0.45)
    return _figure_pixels(figure)


def write_evaluation_images(pixels, labels, probs, class_names):
    """eval/confusion_matrix and eval/confident_errors of the test set."""
    if not len(labels):
        return
    names = list(class_names) if class_names else [str(c) for c in range(probs.shape[1])]
    tf.summary.image('eval/confusion_matrix', confusion_pixels(labels, probs.argmax(1), names),
                     description='Test set: rows the true class, columns the predicted one')
    errors = confident_errors_pixels(pixels, labels, probs, names)
    if errors is not None:
        tf.summary.image('eval/confident_errors', errors,
                         description='Test images wrong with the highest confidence: '
                                     'true / predicted class and its probability')


# -- hyper-parameters ------------------------------------------------------------------------------

def hparam_values(values):
    """The entries HParams can show (bool, int, float, str), numpy scalars as Python ones."""
    out = {}
    for key, value in values.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
    return out


def has_hparams(run_dir):
    return bool(glob.glob(os.path.join(glob.escape(run_dir), HPARAMS_FOLDER,
                                       'events.out.tfevents.*')))


class HParamsLog:
    """RUN/hparams: the run's hyper-parameters (written once: a resumed run keeps its session;
    a run of an older version gets one when it resumes) and its evaluated accuracies."""

    def __init__(self, run_dir, values, trial_id):
        """trial_id: the run's name in the dashboard's first column (unique: sessions of one
        trial id are grouped)."""
        new = not has_hparams(run_dir)
        self.writer = tf.summary.create_file_writer(os.path.join(run_dir, HPARAMS_FOLDER))
        if new:
            with self.writer.as_default(step=0):
                hp.hparams(hparam_values(values), trial_id=trial_id)
            self.writer.flush()

    def write(self, results, step):
        with self.writer.as_default(step=step):
            for tag, result in HPARAMS_METRICS.items():
                if result in results:
                    tf.summary.scalar(tag, results[result])
        self.writer.flush()

    def close(self):
        self.writer.close()

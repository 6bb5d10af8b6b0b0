"""Evaluation metrics of a classifier's predictions, by TensorBoard tag (docs/algorithm.md)."""
import numpy as np
from sklearn import metrics as sklearn_metrics

from libml import predict


def classification_metrics(probs, labels, class_names=None, prefix='accuracy_test'):
    """Metrics of predictions `probs` [N, K] against `labels` [N], by summary tag.

    Precision, recall and F1, macro and weighted, from sklearn.metrics over the classes present
    in the labels or the predictions with zero_division=0 (as the original's f1_score(average=
    'macro')); and, when classes have names, `{prefix}/{name}`: the accuracy (percent) on the
    images of each class present in the labels, i.e. its recall.
    """
    pred = probs.argmax(1)
    metrics = {}
    for average in ('macro', 'weighted'):
        p, r, f, _ = sklearn_metrics.precision_recall_fscore_support(
            labels, pred, average=average, zero_division=0)
        metrics.update({f'precision/{average}': float(p), f'recall/{average}': float(r),
                        f'f1_score/{average}': float(f)})
    if class_names:
        present = np.unique(labels)
        _, recall, _, _ = sklearn_metrics.precision_recall_fscore_support(
            labels, pred, labels=present, average=None, zero_division=0)
        for c, value in zip(present, recall):
            metrics[f'{prefix}/{class_names[c]}'] = 100 * float(value)
    return metrics


def validation_loss(probs, labels):
    """Mean cross-entropy of probabilities `probs` [N, K] for `labels` [N] (losses/val_loss)."""
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(picked, 1e-12)).mean())


def evaluate(model, sets, class_names=None, batch_size=256, predictions=None):
    """The evaluation tags of `model` on `sets` ({name: (images, labels)}, see
    Dataset.eval_sets): accuracy_{name} in percent, losses/val_loss on 'valid', and the
    classification metrics of 'test'. `predictions`, a dict, receives each set's probabilities."""
    results = {}
    for name, (pixels, labels) in sets.items():
        probs = predict.predict(model, pixels, batch_size)
        if predictions is not None:
            predictions[name] = probs
        results[f'accuracy_{name}'] = 100 * float((probs.argmax(1) == labels).mean())
        if name == 'valid':
            results['losses/val_loss'] = validation_loss(probs, labels)
        if name == 'test':
            results.update(classification_metrics(probs, labels, class_names))
    return results

#!/usr/bin/env python3
"""FixMatch (Sohn et al., 2020, arXiv 2001.07685): pseudo-labels from a weak view, trained on a
strong view.

One step (docs/algorithm.md, "FixMatch"): the labeled batch (B images, the --augment preset) and
the unlabeled batch (uratio * B images, each seen as a weak view = the --augment preset and a
strong view = the preset, RandAugment and cutout) go through the model in one forward pass, so
batch-norm statistics come from all of it. The weak view's prediction becomes a hard pseudo-label
where its highest probability reaches --confidence; the strong view is trained on it.
loss = cross-entropy on labeled + wu * mean over unlabeled of (confident) cross-entropy.
Optimizer as the paper: SGD with Nesterov momentum 0.9, lr 0.03, cosine decay, weight decay
5e-4 as an L2 loss of the kernels (these are this script's defaults of the trainer's flags).

  python fixmatch.py --dataset=cifar10.3@250-5000 --augment=cifar10
"""
import dataclasses

import libml  # noqa: F401  (first: sets TensorFlow's environment before TensorFlow is imported)

import tensorflow as tf

from libml import optimizers, train
from libml.algorithm import GUESS, MASK
from libml.options import option
from libml.utils import UserError


@dataclasses.dataclass
class Hyper:
    """FixMatch's hyper-parameters: each is a flag of fixmatch.py, with its default."""
    confidence: float = option(0.95, 'Pseudo-labels are kept where the weak view\'s highest '
                               'probability is at least this.')
    wu: float = option(1.0, 'Weight of the unlabeled (pseudo-label) loss.')
    uratio: int = option(7, 'Unlabeled images per labeled image in a batch.')


# The paper's optimizer: the trainer's flags, with these defaults when this script runs (set in
# train.main, so importing this module leaves the trainer's defaults alone).
TRAINER_DEFAULTS = optimizers.SGD_COSINE


class FixMatch:
    name = 'FixMatch'
    nu = 2                        # two views of each unlabeled image:
    views = ('weak', 'strong')    # the --augment preset; the preset + RandAugment + cutout

    def __init__(self, nclass, hyper=None, **changes):
        """hyper: the hyper-parameters (default: Hyper()); `changes` replace some of them."""
        h = dataclasses.replace(hyper or Hyper(), **changes)
        if not 0 <= h.confidence <= 1:
            raise UserError(f'--confidence={h.confidence} must be in [0, 1].')
        if h.wu < 0:
            raise UserError(f'--wu={h.wu} must be >= 0.')
        if h.uratio < 1:
            raise UserError(f'--uratio={h.uratio} must be at least 1.')
        self.nclass, self.confidence, self.wu, self.uratio = nclass, h.confidence, h.wu, h.uratio
        self.args = dict(confidence=h.confidence, wu=h.wu, uratio=h.uratio)

    def loss(self, batch, step):
        """batch: x uint8 [B,H,W,C], label [B], u uint8 [2,U,H,W,C] (weak, strong views of U =
        uratio*B images), u_label [U] (optional, monitoring only). -> loss, summaries."""
        x = tf.cast(batch['x'], tf.float32)
        u = tf.cast(batch['u'], tf.float32)
        b, n = x.shape[0], u.shape[1]
        model = step.model
        # One forward over everything: batch norm normalises with, and learns, the statistics
        # of the whole batch (labeled, weak and strong), as the paper does.
        logits = model(tf.concat([x, u[0], u[1]], 0), training=True, update_stats=True)
        logits_x, logits_weak, logits_strong = tf.split(logits, [b, n, n])

        loss_xe = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=batch['label'], logits=logits_x))
        probs_weak = tf.stop_gradient(tf.nn.softmax(logits_weak))
        pseudo = tf.argmax(probs_weak, axis=1)
        mask = tf.cast(tf.reduce_max(probs_weak, axis=1) >= self.confidence, tf.float32)
        # A mean over all unlabeled examples (not only the confident ones), as the paper's loss.
        loss_xeu = tf.reduce_mean(mask * tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=pseudo, logits=logits_strong))
        loss = loss_xe + self.wu * loss_xeu

        stats = {'losses/xe': loss_xe, 'losses/xeu': loss_xeu, 'losses/overall': loss,
                 'monitors/mask': tf.reduce_mean(mask), GUESS: probs_weak, MASK: mask}
        if 'u_label' in batch:  # how often the weak view's guess is right, confident or not
            stats['monitors/label_acc'] = tf.reduce_mean(
                tf.cast(tf.equal(pseudo, batch['u_label']), tf.float32))
        return loss, stats


if __name__ == '__main__':
    train.main(FixMatch, Hyper, trainer_defaults=TRAINER_DEFAULTS)

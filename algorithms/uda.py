#!/usr/bin/env python3
"""Unsupervised Data Augmentation (Xie et al., NeurIPS 2020, arXiv 1904.12848): the prediction on
a strongly augmented view (RandAugment) should match the sharpened prediction on a weak view.
RealMix takes two of its ingredients: training signal annealing and masking by confidence.

One step (docs/algorithm.md, "UDA"): the labeled batch (B images) and the unlabeled
batch (uratio * B images, each as a weak view = the --augment preset and a strong view = the
preset, RandAugment and cutout) go through the model in one forward pass (batch norm sees it all).
  target = softmax(f(weak) / T) (no gradient); kept where max_K softmax(f(weak)) >= confidence;
  loss = TSA-masked mean xe + wu * mean_u [kept] KL(target || p(strong)) + we * mean_u H(p(weak)).
TSA (--tsa) drops labeled examples whose true class already has probability >= eta(progress).
Defaults: T 0.4 and confidence 0.8, the UDA paper's sharpening and masking; 7 unlabeled images
per labeled one and SGD with Nesterov momentum, lr 0.03, cosine decay, wd 5e-4 (the defaults of
the trainer's flags when this script runs), as FixMatch's reimplementation of UDA, whose CIFAR-10
numbers the FixMatch paper reports.

  python algorithms/uda.py --dataset=cifar10.3@250-5000 --augment=cifar10
"""
import dataclasses

import libml  # noqa: F401  (first: sets TensorFlow's environment before TensorFlow is imported)

import tensorflow as tf

from libml import layers, optimizers, train
from libml.algorithm import (GUESS, LABELED_MASK, MASK, check_at_least, check_fraction,
                             check_positive)
from libml.options import option
from libml.utils import UserError


@dataclasses.dataclass
class Hyper:
    """UDA's hyper-parameters: each is a flag of uda.py, with its default."""
    wu: float = option(1.0, 'Weight of the consistency (KL) loss.')
    T: float = option(0.4, 'Softmax temperature of the weak view\'s prediction (the target).')
    confidence: float = option(0.8, 'Unlabeled examples count where the weak view\'s highest '
                               'probability is at least this.')
    we: float = option(0.0, 'Weight of the entropy of the weak view\'s prediction.')
    tsa: str = option('none', 'Training signal annealing of the labeled loss: '
                      + ', '.join(layers.TSA_SCHEDULES))
    uratio: int = option(7, 'Unlabeled images per labeled image in a batch.')

    def __post_init__(self):
        check_at_least('wu', self.wu, 0)
        check_positive('T', self.T)
        check_fraction('confidence', self.confidence)
        check_at_least('we', self.we, 0)
        if self.tsa not in layers.TSA_SCHEDULES:
            raise UserError(f'--tsa={self.tsa}: choose among {", ".join(layers.TSA_SCHEDULES)}.')
        check_at_least('uratio', self.uratio, 1)


class UDA:
    name = 'UDA'
    nu = 2                        # two views of each unlabeled image:
    views = ('weak', 'strong')    # the --augment preset; the preset + RandAugment + cutout

    def __init__(self, nclass, hyper=None, **changes):
        """hyper: the hyper-parameters (default: Hyper()); `changes` replace some of them."""
        self.hyper = dataclasses.replace(hyper or Hyper(), **changes)
        self.nclass, self.uratio = nclass, self.hyper.uratio
        self.args = dataclasses.asdict(self.hyper)

    def loss(self, batch, step):
        """batch: x uint8 [B,H,W,C], label [B], u uint8 [2,U,H,W,C] (weak, strong views of U =
        uratio*B images), u_label [U] (optional, monitoring only). -> loss, summaries."""
        h = self.hyper
        x = tf.cast(batch['x'], tf.float32)
        u = tf.cast(batch['u'], tf.float32)
        b, n = x.shape[0], u.shape[1]
        logits = step.model(tf.concat([x, u[0], u[1]], 0), training=True, update_stats=True)
        logits_x, logits_weak, logits_strong = tf.split(logits, [b, n, n])

        labels = tf.one_hot(batch['label'], self.nclass)
        eta = layers.tsa_threshold(h.tsa, step.progress, self.nclass)
        tsa_keep = tf.stop_gradient(layers.tsa_mask(tf.nn.softmax(logits_x), labels, eta))
        loss_xe = layers.masked_mean(
            tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits_x), tsa_keep)

        target = tf.stop_gradient(logits_weak / h.T)
        probs_weak = tf.stop_gradient(tf.nn.softmax(logits_weak))
        mask = tf.cast(tf.reduce_max(probs_weak, axis=1) >= h.confidence, tf.float32)
        loss_kl = tf.reduce_mean(mask * layers.kl_divergence(target, logits_strong))
        loss_entropy = tf.reduce_mean(layers.entropy(logits_weak))
        loss = loss_xe + h.wu * loss_kl + h.we * loss_entropy

        stats = {'losses/xe': loss_xe, 'losses/kl': loss_kl, 'losses/entropy': loss_entropy,
                 'monitors/mask': tf.reduce_mean(mask),
                 'monitors/tsa_kept': tf.reduce_mean(tsa_keep),
                 GUESS: tf.nn.softmax(target), MASK: mask}
        if h.tsa != 'none':
            stats[LABELED_MASK] = tsa_keep
        if 'u_label' in batch:  # how often the weak view's arg-max is right, confident or not
            stats['monitors/label_acc'] = tf.reduce_mean(tf.cast(
                tf.equal(tf.argmax(probs_weak, axis=1), batch['u_label']), tf.float32))
        return loss, stats


if __name__ == '__main__':
    train.main(UDA, Hyper, trainer_defaults=optimizers.SGD_COSINE)

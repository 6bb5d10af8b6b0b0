#!/usr/bin/env python3
"""Pseudo-Label (Lee, ICML 2013 workshop): the model's own confident predictions on unlabeled
images are trained on as if they were labels.

One step (docs/algorithm.md, "Pseudo-Label"): cross-entropy on the labeled batch, whose forward
pass alone moves the batch-norm statistics; one view of every unlabeled image; its arg-max class
is its pseudo-label where the highest probability exceeds --threshold:
  loss = xe + wu * ramp * mean_u [max_K p(u) > threshold] * CE(argmax p(u), f(u)),
  ramp = min(progress / warmup_pos, 1), the mean over all unlabeled images.
The gradient flows through f(u) (not through the arg-max). Settings of the MixMatch paper's
comparison (its threshold, from Oliver et al. 2018), which the RealMix paper's Table 1 reports.

  python algorithms/pseudo_label.py --dataset=cifar10.3@250-5000 --augment=cifar10
"""
import dataclasses

import libml  # noqa: F401  (first: sets TensorFlow's environment before TensorFlow is imported)

import tensorflow as tf

from libml import layers, train
from libml.algorithm import GUESS, MASK, check_at_least, check_fraction
from libml.options import option


@dataclasses.dataclass
class Hyper:
    """Pseudo-Label's hyper-parameters: each is a flag of pseudo_label.py, with its default."""
    wu: float = option(1.0, 'Weight of the pseudo-label loss.')
    threshold: float = option(0.95, 'A prediction becomes a pseudo-label where its highest '
                              'probability exceeds this.')
    warmup_pos: float = option(0.4, 'The pseudo-label weight ramps up linearly over this '
                               'fraction of the run.')

    def __post_init__(self):
        check_at_least('wu', self.wu, 0)
        check_fraction('threshold', self.threshold)
        check_fraction('warmup_pos', self.warmup_pos)


class PseudoLabel:
    name = 'PseudoLabel'
    nu = 1   # one view of each unlabeled image

    def __init__(self, nclass, hyper=None, **changes):
        """hyper: the hyper-parameters (default: Hyper()); `changes` replace some of them."""
        self.hyper = dataclasses.replace(hyper or Hyper(), **changes)
        self.args = dataclasses.asdict(self.hyper)

    def loss(self, batch, step):
        """batch: x uint8 [B,H,W,C], label [B], u uint8 [1,B,H,W,C], u_label [B] (optional,
        monitoring only). -> loss, summaries."""
        h, model = self.hyper, step.model
        logits_x = model(tf.cast(batch['x'], tf.float32), training=True, update_stats=True)
        logits_u = model(tf.cast(batch['u'][0], tf.float32), training=True, update_stats=False)
        probs = tf.stop_gradient(tf.nn.softmax(logits_u))
        pseudo = tf.argmax(probs, axis=1)
        mask = tf.cast(tf.reduce_max(probs, axis=1) > h.threshold, tf.float32)
        loss_xe = layers.cross_entropy(batch['label'], logits_x)
        loss_pl = tf.reduce_mean(mask * tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=pseudo, logits=logits_u))
        loss = loss_xe + h.wu * layers.ramp_up(step.progress, h.warmup_pos) * loss_pl
        stats = {'losses/xe': loss_xe, 'losses/pl': loss_pl, 'monitors/mask': tf.reduce_mean(mask),
                 GUESS: probs, MASK: mask}
        if 'u_label' in batch:  # how often the arg-max is right, confident or not
            stats['monitors/label_acc'] = tf.reduce_mean(
                tf.cast(tf.equal(pseudo, batch['u_label']), tf.float32))
        return loss, stats


if __name__ == '__main__':
    train.main(PseudoLabel, Hyper)

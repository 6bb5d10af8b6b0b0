#!/usr/bin/env python3
"""RealMix (Nair, Fuentes Alonso, Beltramelli, 2019): MixMatch with TSA and out-of-distribution masking.

One step (docs/algorithm.md, "One training step"): guess the unlabelled batch's labels from `nu`
augmented views (mean softmax, sharpened with T); MixUp labelled and unlabelled examples
(--mixmode); interleave so every forward batch holds both kinds (batch-norm statistics from the
first batch only); loss = cross-entropy on labelled (TSA may drop examples the model already
fits) + w_match * warmup * squared error on unlabelled (the least confident fraction
--percent_mask may be dropped).

  python realmix.py --dataset=cifar10.3@250-5000 --augment=cifar10 --tsa=linear_schedule
"""
import libml  # noqa: F401  (sets TensorFlow's environment before TensorFlow is imported)

import tensorflow as tf
from absl import flags

from libml import layers, train
from libml.utils import UserError, no_extra_args, run

FLAGS = flags.FLAGS
flags.DEFINE_float('w_match', 75, 'Weight of the unlabelled (L2) loss.')
flags.DEFINE_float('beta', 0.75, 'MixUp Beta(beta, beta) parameter.')
flags.DEFINE_integer('nu', 2, 'Augmented views of each unlabelled image.')
flags.DEFINE_float('T', 0.5, 'Sharpening temperature of the guessed labels.')
flags.DEFINE_integer('warmup_kimg', 1024, 'The unlabelled loss weight ramps up over this many kimg.')
flags.DEFINE_string('mixmode', 'xxy.yxy', 'What labelled (left of ".") and unlabelled (right) '
                    'examples are mixed with: ' + ' '.join(layers.MixMode.MODES))
flags.DEFINE_string('tsa', 'none', 'Training signal annealing: ' + ', '.join(layers.TSA_SCHEDULES))
flags.DEFINE_float('percent_mask', -1, 'Drop this fraction (0 < p < 1) of the least confident '
                   'unlabelled examples from the unlabelled loss; -1 = off.')

DEFAULTS = {'T': 0.5, 'warmup_kimg': 1024, 'mixmode': 'xxy.yxy'}


class RealMix:
    name = 'RealMix'

    def __init__(self, nclass, train_kimg, w_match=75, beta=0.75, nu=2, T=0.5, warmup_kimg=1024,
                 mixmode='xxy.yxy', tsa='none', percent_mask=-1):
        if beta <= 0:
            raise UserError(f'--beta={beta} must be > 0.')
        if nu < 1:
            raise UserError(f'--nu={nu} must be at least 1.')
        if T <= 0:
            raise UserError(f'--T={T} must be > 0.')
        if warmup_kimg < 0 or w_match < 0:
            raise UserError('--warmup_kimg and --w_match must be >= 0.')
        if percent_mask != -1 and not 0 < percent_mask < 1:
            raise UserError(f'--percent_mask={percent_mask} must be in (0, 1), or -1 for off.')
        layers.tsa_threshold(tsa, 0.0, nclass)  # rejects an unknown schedule
        self.mixmode = layers.MixMode(mixmode)
        self.nclass, self.train_kimg = nclass, train_kimg
        self.w_match, self.beta, self.nu, self.T = w_match, beta, nu, T
        self.warmup_kimg, self.tsa, self.percent_mask = warmup_kimg, tsa, percent_mask
        self.args = dict(w_match=w_match, beta=beta, nu=nu, tsa=tsa, percent_mask=percent_mask)
        # The original hard-coded these: name the run after them only when they are changed.
        for key, value in (('T', T), ('warmup_kimg', warmup_kimg), ('mixmode', mixmode)):
            if value != DEFAULTS[key]:
                self.args[key] = value

    def draw(self, seed, batch):
        """MixUp draws of one step (made in the input pipeline, outside compiled code)."""
        return self.mixmode.draw(seed, batch, self.nu, self.beta)

    def loss(self, model, batch, images):
        """batch: x uint8 [B,H,W,C], label [B], u uint8 [nu,B,H,W,C], draws. -> loss, summaries."""
        x = tf.cast(batch['x'], tf.float32)
        u = tf.cast(batch['u'], tf.float32)
        b = x.shape[0]
        views = [u[i] for i in range(self.nu)]
        # Guessing must not move the batch-norm statistics: only the first training batch does.
        guess = layers.guess_label([model(v, training=True, update_stats=False) for v in views],
                                   self.T)
        targets = [tf.one_hot(batch['label'], self.nclass)] + [guess] * self.nu
        xs, ps = self.mixmode([x] + views, targets, batch['draws'])
        mixed = layers.interleave(xs, b)
        logits = [model(mixed[0], training=True, update_stats=True)]
        logits += [model(m, training=True, update_stats=False) for m in mixed[1:]]
        logits = layers.interleave(logits, b)
        logits_x, logits_u = logits[0], tf.concat(logits[1:], 0)
        p_x, p_u = ps[0], tf.concat(ps[1:], 0)

        xe = tf.nn.softmax_cross_entropy_with_logits(labels=p_x, logits=logits_x)
        progress = tf.clip_by_value(images / (self.train_kimg * 1024.0), 0.0, 1.0)
        if self.tsa == 'none':
            tsa_keep = tf.ones_like(xe)
        else:
            eta = layers.tsa_threshold(self.tsa, progress, self.nclass)
            tsa_keep = layers.tsa_mask(tf.nn.softmax(logits_x), p_x, eta)
        loss_xe = layers.masked_mean(xe, tsa_keep)

        probs_u = tf.nn.softmax(logits_u)
        keep = layers.confidence_mask(probs_u, self.percent_mask)
        squared = tf.reduce_mean(tf.square(p_u - probs_u), axis=1)   # mean over classes
        loss_l2u = layers.masked_mean(squared, keep)
        warmup = tf.clip_by_value(images / (max(self.warmup_kimg, 1e-9) * 1024.0), 0.0, 1.0)
        loss = loss_xe + self.w_match * warmup * loss_l2u

        confidence = tf.reduce_max(probs_u, axis=1)
        stats = {'losses/xe': loss_xe, 'losses/l2u': loss_l2u, 'losses/overall': loss,
                 'losses/min_unsup_prob': tf.reduce_min(confidence),
                 'losses/mean_unsup_prob': tf.reduce_mean(confidence),
                 'losses/max_unsup_prob': tf.reduce_max(confidence)}
        if self.tsa != 'none':
            stats['losses/tsa_kept'] = tf.reduce_mean(tsa_keep)
        if self.percent_mask > 0:
            # UDA's name for the kept fraction; and the confidence below which examples dropped.
            stats['losses/high_prob_ratio'] = tf.reduce_mean(keep)
            stats['losses/percent_confidence_mask'] = tf.reduce_min(
                tf.where(keep > 0, confidence, tf.ones_like(confidence)))
        return loss, stats


def main(argv):
    no_extra_args(argv)
    train.train_from_flags(FLAGS, lambda nclass: RealMix(
        nclass, FLAGS.train_kimg, w_match=FLAGS.w_match, beta=FLAGS.beta, nu=FLAGS.nu, T=FLAGS.T,
        warmup_kimg=FLAGS.warmup_kimg, mixmode=FLAGS.mixmode, tsa=FLAGS.tsa,
        percent_mask=FLAGS.percent_mask))


if __name__ == '__main__':
    run(main)

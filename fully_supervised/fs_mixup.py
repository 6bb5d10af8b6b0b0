#!/usr/bin/env python3
"""Fully supervised MixUp baseline: labeled images only, mixed within the batch.

  python fully_supervised/fs_mixup.py --train_dir experiments/fs --dataset=mydataset-50 \
      --wd=0.02 --train_record mydataset-train.tfrecord --test_record mydataset-test.tfrecord
"""

import libml  # noqa: F401  (first: sets TensorFlow's environment before TensorFlow is imported)

import tensorflow as tf
from absl import flags

from libml import layers, train
from libml.utils import UserError, no_extra_args, run

FLAGS = flags.FLAGS
BETA = 0.5
flags.DEFINE_float('beta', BETA, 'MixUp Beta(beta, beta) parameter.')


class SupervisedMixup:
    """Cross-entropy on labeled images mixed with a permutation of their own batch."""
    name = 'FSMixup'
    nu = 0

    def __init__(self, nclass, beta=BETA):
        if beta <= 0:
            raise UserError(f'--beta={beta} must be > 0.')
        self.nclass, self.beta = nclass, beta
        self.mixmode = layers.MixMode('xx.')
        self.args = dict(beta=beta)

    def draw(self, seed, batch):
        return self.mixmode.draw(seed, batch, 0, self.beta)

    def loss(self, model, batch, nimg):
        """batch: x uint8 [B, H, W, C], label int64 [B], draws -> loss, summaries."""
        x, p = layers.mixup(tf.cast(batch['x'], tf.float32), tf.one_hot(batch['label'], self.nclass),
                            batch['draws']['lam'], batch['draws']['perm_x'])
        logits = model(x, training=True)
        xe = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=p, logits=logits))
        return xe, {'losses/xe': xe}


def main(argv):
    no_extra_args(argv)
    train.train_from_flags(FLAGS, lambda nclass: SupervisedMixup(nclass, FLAGS.beta),
                           supervised=True)


if __name__ == '__main__':
    run(main)

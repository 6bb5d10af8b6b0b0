#!/usr/bin/env python3
"""Fully supervised baseline: the same Wide-ResNet and trainer, labeled images only.

Cross-entropy with label smoothing. The dataset is NAME-VALID: validation = the first VALID
records of --train_record, training = the rest.

  python fully_supervised/fs_baseline.py --train_dir experiments/fs --dataset=mydataset-50 \
      --wd=0.02 --smoothing=0.001 --train_record mydataset-train.tfrecord \
      --test_record mydataset-test.tfrecord
"""

import libml  # noqa: F401  (first: sets TensorFlow's environment before TensorFlow is imported)

import tensorflow as tf
from absl import flags

from libml import train
from libml.utils import UserError, no_extra_args, run

FLAGS = flags.FLAGS
SMOOTHING = 0.001
flags.DEFINE_float('smoothing', SMOOTHING, 'Label smoothing: targets are (1-s)*onehot + s/K.')


class Supervised:
    """Cross-entropy on labeled images, with label smoothing."""
    name = 'FSBaseline'
    nu = 0

    def __init__(self, nclass, smoothing=SMOOTHING):
        if not 0 <= smoothing < 1:
            raise UserError(f'--smoothing={smoothing} must be in [0, 1).')
        self.nclass, self.smoothing = nclass, smoothing
        self.args = dict(smoothing=smoothing)

    def targets(self, labels):
        return tf.one_hot(labels, self.nclass) * (1 - self.smoothing) + self.smoothing / self.nclass

    def loss(self, model, batch, nimg):
        """batch: x uint8 [B, H, W, C], label int64 [B] -> loss, summaries."""
        logits = model(tf.cast(batch['x'], tf.float32), training=True)
        xe = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(
            labels=self.targets(batch['label']), logits=logits))
        return xe, {'losses/xe': xe}


def main(argv):
    no_extra_args(argv)
    train.train_from_flags(FLAGS, lambda nclass: Supervised(nclass, FLAGS.smoothing),
                           supervised=True)


if __name__ == '__main__':
    run(main)

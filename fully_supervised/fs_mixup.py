#!/usr/bin/env python3
"""Fully supervised MixUp baseline: labeled images only, mixed within the batch.

  python fully_supervised/fs_mixup.py --train_dir experiments/fs --dataset=mydataset-50 \
      --wd=0.02 --train_record mydataset-train.tfrecord --test_record mydataset-test.tfrecord
"""

import libml  # noqa: F401  (first: sets TensorFlow's environment before TensorFlow is imported)

from absl import flags

from libml import baselines, train

FLAGS = flags.FLAGS
flags.DEFINE_float('beta', baselines.BETA, 'MixUp Beta(beta, beta) parameter.')


if __name__ == '__main__':
    train.main(lambda nclass: baselines.SupervisedMixup(nclass, FLAGS.beta), supervised=True)

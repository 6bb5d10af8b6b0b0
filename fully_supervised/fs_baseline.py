#!/usr/bin/env python3
"""Fully supervised baseline: the same Wide-ResNet and trainer, labeled images only.

Cross-entropy with label smoothing. The dataset is NAME-VALID: validation = the first VALID
records of --train_record, training = the rest.

  python fully_supervised/fs_baseline.py --train_dir experiments/fs --dataset=mydataset-50 \
      --wd=0.02 --smoothing=0.001 --train_record mydataset-train.tfrecord \
      --test_record mydataset-test.tfrecord
"""

import libml  # noqa: F401  (first: sets TensorFlow's environment before TensorFlow is imported)

from absl import flags

from libml import baselines, train

FLAGS = flags.FLAGS
flags.DEFINE_float('smoothing', baselines.SMOOTHING,
                   'Label smoothing: targets are (1-s)*onehot + s/K.')


if __name__ == '__main__':
    train.main(lambda nclass: baselines.Supervised(nclass, FLAGS.smoothing), supervised=True)

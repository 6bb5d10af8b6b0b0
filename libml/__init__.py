"""Shared library of RealMix-TF2: data, augmentation, models, layers and the trainer.

Importing the package sets two TensorFlow environment defaults before any module here imports
TensorFlow (a user's own setting always wins):
- TF_ENABLE_ONEDNN_OPTS=1: on AMD CPUs TensorFlow leaves oneDNN off, and a 32x32 training step
  runs about 1.7x slower without it (see benchmarks/). It changes nothing on GPUs.
- TF_CPP_MIN_LOG_LEVEL=1: hides TensorFlow's INFO chatter so tqdm bars and errors stay readable.
"""
import os

os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

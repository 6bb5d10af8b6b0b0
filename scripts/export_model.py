#!/usr/bin/env python3
"""Export a trained run's evaluated model as a SavedModel and/or TFLite file that serves without
this repository (only TensorFlow is needed to use it).

Usage: scripts/export_model.py RUN_OR_CHECKPOINT --out=DIR [--format=saved_model|tflite|both]
                               [--quantize] [--overwrite]
  e.g. scripts/export_model.py experiments/cifar10.3@250-5000/RealMix_.../ --out=exported/cifar10

RUN_OR_CHECKPOINT: a run folder (its newest checkpoint), its tf/ folder, or one checkpoint
RUN/tf/model.ckpt-NNNNNNNN. The EMA weights and the batch-norm statistics that were evaluated are
exported. DIR receives saved_model.pb + variables/ + assets/ (signatures serving_default: encoded
PNG/JPEG bytes, and predict_pixels: uint8 pixels), model.tflite, the run's args.json and
export.json; it is written completely or not at all. Details: libml/export.py and the README
section "Export and serve".
"""
from absl import flags

from libml import utils
from libml.files import check_new_output
from libml.utils import UserError

flags.DEFINE_string('out', None, 'Folder to write (must not exist, unless --overwrite).')
flags.DEFINE_enum('format', 'both', ['saved_model', 'tflite', 'both'],
                  'What to export: the SavedModel, the TFLite model of its predict_pixels '
                  'signature, or both.')
flags.DEFINE_bool('quantize', False, 'TFLite with dynamic-range quantised (int8) weights instead '
                  'of float32; the accuracy change is measured on the run\'s test set ($ML_DATA) '
                  'and printed.')
flags.DEFINE_bool('overwrite', False, 'Replace --out if it exists (once the new export is complete).')
FLAGS = flags.FLAGS

USAGE = 'usage: scripts/export_model.py RUN_OR_CHECKPOINT --out=DIR [--format=both]'


def main(argv):
    if len(argv) != 2:
        raise UserError(f'expected one argument, the run folder or checkpoint; {USAGE}')
    if not FLAGS.out:
        raise UserError(f'--out=DIR is required (the folder to write); {USAGE}')
    check_new_output(FLAGS.out, FLAGS.overwrite)
    from libml import export  # imports TensorFlow: after the checks, so mistakes show at once
    export.export_run(argv[1], FLAGS.out, FLAGS.format, FLAGS.overwrite, FLAGS.quantize)


if __name__ == '__main__':
    utils.run(main)

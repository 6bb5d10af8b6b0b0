"""Exporting a run's evaluated model so it serves without this repository (scripts/export_model.py).

    export_run('experiments/cifar10.3@250-5000/RealMix_.../', 'exported/', formats='both')

What is exported is what evaluation and --perform_inference use: the EMA weights of a checkpoint
with the batch-norm statistics stored beside them (the statistics that were evaluated), restored
by libml/runs.py. The output folder, complete or absent (written under a temporary name, then
renamed; an existing folder is replaced only with overwrite=True):

  saved_model.pb, variables/   SavedModel, tag "serve" (--format saved_model or both), signatures:
      serving_default  image_bytes: string [N], encoded PNG or JPEG files of any size and mode,
                       decoded and resized in the graph as libml/images.py decodes for training
                       (images.decode_encoded, then images.to_model_pixels; the few differences
                       TF's decoders impose, e.g. a grey PNG's transparent colour, are listed there)
      predict_pixels   pixels: uint8 [N, H, W, C] at the model's size
      both ->          probabilities float32 [N, K] (softmax), class_id int64 [N] (the most
                       probable class), class_name string [N]
    Constants of the loaded object (tf.saved_model.load(DIR).height.numpy() ...): height, width,
    channels, nclass, class_names; the asset assets/class_names.txt holds one name a line.
  model.tflite                 predict_pixels converted by tf.lite.TFLiteConverter (--format
                               tflite or both): float32, or dynamic-range quantised weights with
                               quantize=True (its accuracy change is measured on the run's test
                               set and printed)
  args.json                    a copy of the run's args/args.json
  export.json                  what was exported: checkpoint, image shape, classes, files

libml/predict.py predicts a folder with such a SavedModel (--perform_inference
--inference_ckpt=DIR) through ExportedModel below: the project decodes the files, the SavedModel's
predict_pixels runs the model.
"""
import os
import shutil
import tempfile
import warnings

import numpy as np
import tensorflow as tf

from libml import datasets, images, pipeline, runs
from libml.files import atomic_folder, check_new_output, write_json
from libml.utils import UserError

FORMATS = ('saved_model', 'tflite', 'both')
TFLITE_FILE = 'model.tflite'
ARGS_FILE = 'args.json'
INFO_FILE = 'export.json'
CLASS_NAMES_FILE = 'class_names.txt'
PIXELS_SIGNATURE = 'predict_pixels'


def class_names_of(args):
    """The run's class names, or the class indices as text when it has none."""
    names = args.get('class_names')
    return [str(n) for n in names] if names else [str(i) for i in range(int(args['nclass']))]


class ServingModule(tf.Module):
    """The run's model with its two signatures and constants (module doc), ready to save."""

    def __init__(self, model, height, width, channels, class_names, class_names_file):
        super().__init__(name='realmix_export')
        self.model = model
        self.height = tf.Variable(height, trainable=False, name='height')
        self.width = tf.Variable(width, trainable=False, name='width')
        self.channels = tf.Variable(channels, trainable=False, name='channels')
        self.nclass = tf.Variable(len(class_names), trainable=False, name='nclass')
        self.class_names = tf.Variable(class_names, trainable=False, name='class_names')
        self.class_names_file = tf.saved_model.Asset(class_names_file)
        names = tf.constant(class_names)

        def outputs(pixels):
            probabilities = tf.nn.softmax(model(tf.cast(pixels, tf.float32), training=False), -1)
            class_id = tf.argmax(probabilities, -1, output_type=tf.int64)
            return {'probabilities': probabilities, 'class_id': class_id,
                    'class_name': tf.gather(names, class_id)}

        def from_bytes(image_bytes):
            decode = lambda data: images.to_model_pixels(images.decode_encoded(data), height,
                                                         width, channels)
            pixels = tf.map_fn(decode, image_bytes,
                               fn_output_signature=tf.TensorSpec([height, width, channels],
                                                                 tf.uint8))
            return outputs(pixels)

        self.predict_pixels = tf.function(outputs, input_signature=[
            tf.TensorSpec([None, height, width, channels], tf.uint8, name='pixels')])
        self.predict_bytes = tf.function(from_bytes, input_signature=[
            tf.TensorSpec([None], tf.string, name='image_bytes')])

    def signatures(self):
        return {'serving_default': self.predict_bytes.get_concrete_function(),
                PIXELS_SIGNATURE: self.predict_pixels.get_concrete_function()}


def tflite_model(saved_model_dir, quantize=False):
    """The predict_pixels signature of a SavedModel as TFLite flatbuffer bytes (float32, or
    dynamic-range quantised weights)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                         signature_keys=[PIXELS_SIGNATURE])
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative data: dynamic range
    return converter.convert()


def tflite_probabilities(tflite, pixels, batch_size=256, threads=None):
    """Probabilities float32 [N, K] of a TFLite model (path or bytes) on uint8 [N, H, W, C]."""
    source = ({'model_path': os.fspath(tflite)} if isinstance(tflite, (str, os.PathLike))
              else {'model_content': tflite})
    with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated" (ai_edge_litert's is the
        warnings.simplefilter('ignore', UserWarning)  # same interpreter; TF 2.21 still ships it)
        interpreter = tf.lite.Interpreter(**source, num_threads=threads)
    runner = interpreter.get_signature_runner(PIXELS_SIGNATURE)
    out = [runner(pixels=np.ascontiguousarray(pixels[i:i + batch_size]))['probabilities']
           for i in range(0, len(pixels), batch_size)]
    return np.concatenate(out) if out else np.zeros([0, 0], np.float32)


def _test_set(args):
    """(uint8 images, labels) of the run's test set, read from $ML_DATA (the quantisation check)."""
    # {name}.{seed}@{size}-{valid}, or a baseline's {name}-{valid} (its records: the defaults
    # unless the run recorded others).
    supervised = (None if '@' in args.get('dataset', '@')
                  else (args.get('train_record'), args.get('test_record')))
    try:
        dataset = datasets.resolve(args['dataset'], supervised)
        return pipeline.load_arrays(dataset.test, dataset.shape)
    except (UserError, KeyError) as e:
        raise UserError(f'--quantize measures the accuracy change on the run\'s test set, which '
                        f'cannot be read ({e}); set ML_DATA to the folder that holds the run\'s '
                        'data, or export without --quantize.') from None


def quantisation_report(float_tflite, quantized_tflite, test_set, dataset, say=print):
    """Accuracy of the float32 and quantised TFLite models on `test_set` (uint8 images, labels) of
    `dataset`, printed; returns {'float32': %, 'quantized': %, 'change': points, 'agreement': %,
    'max_abs_diff': largest probability difference, 'images': N}."""
    x, y = test_set
    p_float = tflite_probabilities(float_tflite, x)
    p_quant = tflite_probabilities(quantized_tflite, x)
    accuracy = lambda p: 100.0 * float(np.mean(p.argmax(1) == y))
    report = {'float32': accuracy(p_float), 'quantized': accuracy(p_quant),
              'agreement': 100.0 * float(np.mean(p_float.argmax(1) == p_quant.argmax(1))),
              'max_abs_diff': float(np.abs(p_float - p_quant).max()), 'images': len(y)}
    report['change'] = report['quantized'] - report['float32']
    say(f'Dynamic-range quantisation, on the {len(y)} test images of {dataset}: accuracy '
        f'{report["quantized"]:.2f}% (float32 {report["float32"]:.2f}%, change '
        f'{report["change"]:+.2f} points); same class for {report["agreement"]:.2f}% of the '
        f'images; largest probability difference {report["max_abs_diff"]:.4f}.')
    return report


def export_run(ckpt, out, formats='both', overwrite=False, quantize=False, say=print):
    """Exports the evaluated model of `ckpt` (RUN, RUN/tf or RUN/tf/model.ckpt-NNNNNNNN) to the
    folder `out` (module doc). Returns the export.json dict."""
    if formats not in FORMATS:
        raise UserError(f'--format={formats} is not one of {", ".join(FORMATS)}.')
    out = check_new_output(out, overwrite)  # before the slow work (atomic_folder checks again)
    if quantize and formats == 'saved_model':
        raise UserError('--quantize applies to the TFLite model: use --format=tflite or both.')
    prefix, run_dir = runs.resolve_checkpoint(ckpt)
    args_path = os.path.join(run_dir, 'args', 'args.json')
    args = runs.read_args(run_dir)
    model = runs.restore_ema(prefix, args)
    test_set = _test_set(args) if quantize else None  # before the slow work: it may be missing
    h, w, c = (int(args[k]) for k in ('height', 'width', 'channels'))
    names = class_names_of(args)
    say(f'Exporting the EMA weights of {prefix} ({runs.describe(args)}) to {out}.')
    with atomic_folder(out, overwrite) as tmp, tempfile.TemporaryDirectory() as scratch:
        names_file = os.path.join(scratch, CLASS_NAMES_FILE)  # copied into assets/ by the save
        with open(names_file, 'w', encoding='utf-8') as f:
            f.write(''.join(n + '\n' for n in names))
        module = ServingModule(model, h, w, c, names, names_file)
        saved = tmp if formats != 'tflite' else os.path.join(scratch, 'saved_model')
        tf.saved_model.save(module, saved, signatures=module.signatures())
        info = {'checkpoint': prefix, 'run': run_dir, 'height': h, 'width': w, 'channels': c,
                'nclass': len(names), 'class_names': names, 'format': formats,
                'signatures': ['serving_default', PIXELS_SIGNATURE] if formats != 'tflite' else []}
        if formats != 'saved_model':
            flatbuffer = tflite_model(saved)
            if quantize:
                quantized = tflite_model(saved, quantize=True)
                info['quantization'] = quantisation_report(flatbuffer, quantized, test_set,
                                                          args['dataset'], say)
                flatbuffer = quantized
            with open(os.path.join(tmp, TFLITE_FILE), 'wb') as f:
                f.write(flatbuffer)
            info['tflite'] = {'file': TFLITE_FILE, 'signature': PIXELS_SIGNATURE,
                              'weights': 'dynamic-range int8' if quantize else 'float32'}
        shutil.copyfile(args_path, os.path.join(tmp, ARGS_FILE))
        write_json(os.path.join(tmp, INFO_FILE), info)
    say(f'Wrote {out}: ' + ', '.join(
        (['SavedModel (signatures serving_default, predict_pixels)'] if formats != 'tflite' else [])
        + ([f'{TFLITE_FILE} ({info["tflite"]["weights"]})'] if formats != 'saved_model' else [])
        + [ARGS_FILE, INFO_FILE]) + '.')
    return info


# ----------------------------------------------------------------------------------------------
# Using an exported SavedModel in this project (--perform_inference --inference_ckpt=DIR).

def is_saved_model(path):
    """True if `path` is a folder holding a SavedModel."""
    path = os.path.expanduser(os.fspath(path))
    return os.path.isdir(path) and (os.path.exists(os.path.join(path, 'saved_model.pb'))
                                    or os.path.exists(os.path.join(path, 'saved_model.pbtxt')))


def read_export_args(folder):
    """The run arguments copied beside an exported SavedModel (args.json)."""
    folder = os.path.abspath(os.path.expanduser(folder))
    path = os.path.join(folder, ARGS_FILE)
    if not os.path.exists(path):
        raise UserError(f'{folder} holds a SavedModel but no {ARGS_FILE}: only folders written '
                        'by scripts/export_model.py can be used for inference.')
    return runs.read_args(folder, path)


class ExportedModel:
    """An exported SavedModel, used by libml/predict.py in place of the run's model: its
    predict_pixels signature gives the probabilities."""

    def __init__(self, folder):
        self.folder = os.path.abspath(os.path.expanduser(folder))
        try:
            self.loaded = tf.saved_model.load(self.folder)
            self.signature = self.loaded.signatures[PIXELS_SIGNATURE]
        except (KeyError, OSError, ValueError, tf.errors.OpError) as e:
            raise UserError(f'{self.folder} is not a SavedModel written by '
                            f'scripts/export_model.py ({str(e).splitlines()[0][:160]}).') from None
        self.nclass = int(self.loaded.nclass.numpy())
        self.shape = tuple(int(getattr(self.loaded, k).numpy())
                           for k in ('height', 'width', 'channels'))

    def probability_function(self, height, width, channels):
        """float32 [B, H, W, C] (integer values in [0, 255]) -> probabilities float32 [B, K]."""
        if (height, width, channels) != self.shape:
            raise UserError(f'{self.folder} takes {"x".join(map(str, self.shape))} images, not '
                            f'{height}x{width}x{channels}.')
        return lambda x: self.signature(pixels=tf.cast(x, tf.uint8))['probabilities']

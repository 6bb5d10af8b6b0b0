"""scripts/export_model.py and libml/export.py: the exported SavedModel and TFLite model, used by
real clients (a fresh Python process with only TensorFlow and numpy, saved_model_cli,
tf.lite.Interpreter), the in-graph decoder against the project's one decoder, and bad input.

One tiny model is trained once (module fixture) and exported once; the tests share both.
"""
import io
import json
import os
import re
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, assert_user_error, make_ssl_dataset, run_script

import libml  # noqa: F401  (before TensorFlow)
import tensorflow as tf

from libml import datasets, export, images, predict, runs, train
from libml.baselines import Supervised
from libml.utils import UserError

CLASSES = ['a', 'b', 'c']


def png_bytes(array, mode=None, **options):
    b = io.BytesIO()
    Image.fromarray(array, mode).save(b, 'PNG', **options)
    return b.getvalue()


def jpeg_bytes(array, **options):
    b = io.BytesIO()
    Image.fromarray(array).save(b, 'JPEG', quality=90, **options)
    return b.getvalue()


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """A trained run (8x8x3, 3 classes, a few steps), its export (both formats) and a flat folder
    of PNG and JPEG files of several modes, at the model's size and at other sizes."""
    root = tmp_path_factory.mktemp('export')
    ml_data = root / 'ml_data'
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('ML_DATA', str(ml_data))
        name = make_ssl_dataset(str(ml_data), shape=(8, 8, 3), class_names=CLASSES) + '-6'
        config = train.Config(train_dir=str(root / 'exp'), batch=32, filters=4, repeat=1,
                              train_kimg=1, report_kimg=1, save_kimg=1, augment='svhn',
                              eval_batch=64)
        dataset = datasets.resolve(name)
        trainer = train.Trainer(Supervised(dataset.nclass), dataset, config)
        trainer.train()
    run = trainer.run_dir
    out = root / 'exported'
    info = export.export_run(run, out, 'both')

    rng = np.random.RandomState(3)
    px = lambda *shape: rng.randint(0, 256, shape).astype(np.uint8)
    folder = root / 'images'
    folder.mkdir()
    files = {
        'a_rgb.png': png_bytes(px(8, 8, 3)),
        'b_grey.png': png_bytes(px(8, 8), 'L'),
        'c_rgba.png': png_bytes(px(8, 8, 4), 'RGBA'),
        'd_palette.png': png_bytes(np.asarray(Image.fromarray(px(8, 8, 3)).convert(
            'P', palette=Image.ADAPTIVE, colors=12).convert('RGB'))),
        'e_photo.jpg': jpeg_bytes(px(8, 8, 3)),
        'f_grey.jpeg': jpeg_bytes(px(8, 8)),
        'g_large.png': png_bytes(px(20, 13, 3)),   # resized in the graph as in libml/images.py
        'h_large.jpg': jpeg_bytes(px(16, 16, 3)),
    }
    for f, data in files.items():
        (folder / f).write_bytes(data)
    return dict(root=root, ml_data=ml_data, run=run, out=out, info=info, folder=folder,
                files=sorted(files))


@pytest.fixture(scope='module')
def reference(world, tmp_path_factory):
    """--perform_inference's probabilities of the folder with the run's checkpoint, by file."""
    result = predict.run_inference(world['run'], world['folder'],
                                   out_dir=tmp_path_factory.mktemp('reference'), progress=False)
    probs = np.load(result['npy'])
    with open(result['csv'], encoding='utf-8') as f:
        files = [line.split(',')[0] for line in f.read().splitlines()[1:]]
    return dict(zip(files, probs))


# ----------------------------------------------------------------------------------------------
# Real clients.

CLIENT = r'''
import json, os, sys
sys.modules['libml'] = None  # this project's library must not be needed (import libml fails)
import numpy as np
import tensorflow as tf

folder, export_dir, out = sys.argv[1:4]
model = tf.saved_model.load(export_dir)
files = sorted(os.listdir(folder))
data = [open(os.path.join(folder, f), 'rb').read() for f in files]
result = model.signatures['serving_default'](image_bytes=tf.constant(data))
np.save(out, result['probabilities'].numpy())
print(json.dumps({
    'files': files, 'class_id': result['class_id'].numpy().tolist(),
    'class_name': [c.decode() for c in result['class_name'].numpy()],
    'shape': [int(model.height.numpy()), int(model.width.numpy()), int(model.channels.numpy())],
    'class_names': [c.decode() for c in model.class_names.numpy()],
    'asset': open(model.class_names_file.asset_path.numpy().decode()).read().split(),
    'repo_modules': sorted(m for m in sys.modules if m.startswith('libml') and sys.modules[m]),
    'path': sys.path}))
'''


def float_numbers(text):
    return [float(x) for x in re.findall(r'[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?', text)]


def test_real_clients_serving_default_and_saved_model_cli(world, reference, tmp_path):
    """A fresh process with only tensorflow + numpy (serving_default on the encoded files) and
    saved_model_cli (run predict_pixels) agree with --perform_inference to 1e-5; the signatures
    are those `saved_model_cli show` lists."""
    out, folder = world['out'], world['folder']
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['TF_CPP_MIN_LOG_LEVEL'] = '2'
    pixels = predict.load_images([str(folder / f) for f in world['files']], 8, 8, 3)
    cli = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
    commands = {
        'client': [sys.executable, '-c', CLIENT, str(folder), str(out), str(tmp_path / 'p.npy')],
        'run': [cli, 'run', '--dir', str(out), '--tag_set', 'serve', '--signature_def',
                'predict_pixels', '--input_exprs', f'pixels={pixels.tolist()}'],
    }
    started = {k: subprocess.Popen(c, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True) for k, c in commands.items()}
    done = {k: (p.communicate(timeout=300), p.returncode) for k, p in started.items()}
    for k, ((stdout, stderr), code) in done.items():
        assert code == 0, f'{k}: exit {code}\n{stdout}\n{stderr}'
    expected = np.stack([reference[f] for f in world['files']])

    client = json.loads(done['client'][0][0].strip().splitlines()[-1])
    assert client['files'] == world['files']
    assert client['repo_modules'] == [] and REPO not in client['path']
    probs = np.load(tmp_path / 'p.npy')
    assert probs.shape == (8, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert client['class_id'] == expected.argmax(1).tolist()
    assert client['class_name'] == [CLASSES[k] for k in client['class_id']]
    assert client['shape'] == [8, 8, 3]
    assert client['class_names'] == CLASSES and client['asset'] == CLASSES

    # What `saved_model_cli show --dir DIR --tag_set serve` lists (its own reader, in-process).
    from tensorflow.python.tools import saved_model_utils
    shown = saved_model_utils.get_meta_graph_def(str(out), 'serve').signature_def
    assert {'serving_default', 'predict_pixels'} <= set(shown)
    assert list(shown['serving_default'].inputs) == ['image_bytes']
    assert list(shown['predict_pixels'].inputs) == ['pixels']
    assert set(shown['serving_default'].outputs) == {'probabilities', 'class_id', 'class_name'}

    printed = done['run'][0][0]
    assert 'Result for output key probabilities:' in printed, printed
    text = printed.split('Result for output key probabilities:')[1].split('Result for')[0]
    np.testing.assert_allclose(np.array(float_numbers(text)).reshape(8, 3), expected, atol=1e-5)


def test_tflite_interpreter(world, reference):
    """tf.lite.Interpreter runs model.tflite: float32 probabilities equal to 1e-4, any batch size."""
    folder = world['folder']
    pixels = predict.load_images([str(folder / f) for f in world['files']], 8, 8, 3)
    interpreter = tf.lite.Interpreter(model_path=str(world['out'] / export.TFLITE_FILE))
    runner = interpreter.get_signature_runner('predict_pixels')
    expected = np.stack([reference[f] for f in world['files']])
    for batch in (pixels, pixels[:3]):
        result = runner(pixels=batch)
        assert result['probabilities'].dtype == np.float32
        np.testing.assert_allclose(result['probabilities'], expected[:len(batch)], atol=1e-4)
        assert result['class_id'].tolist() == expected[:len(batch)].argmax(1).tolist()
        assert [c.decode() for c in result['class_name']] == [CLASSES[k] for k in
                                                               result['class_id']]


def test_perform_inference_with_exported_folder(world, reference, tmp_path, capsys):
    result = predict.run_inference(world['out'], world['folder'], out_dir=tmp_path,
                                   progress=False)
    assert 'with the exported model' in capsys.readouterr().out
    args = json.loads((world['out'] / 'args.json').read_text())
    assert args == json.loads(open(os.path.join(world['run'], 'args', 'args.json')).read())
    assert result['npy'] == str(tmp_path / f'{args["dataset"]}_pred.npy')
    expected = np.stack([reference[f] for f in world['files']])
    np.testing.assert_allclose(np.load(result['npy']), expected, atol=1e-5)
    info = json.loads((world['out'] / export.INFO_FILE).read_text())
    assert info['checkpoint'].endswith('model.ckpt-00001024') and info['class_names'] == CLASSES


def test_quantize_measures_the_accuracy_change(world, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('ML_DATA', str(world['ml_data']))
    info = export.export_run(world['run'], tmp_path / 'q', 'tflite', quantize=True)
    printed = capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / 'q')) == ['args.json', 'export.json', 'model.tflite']
    q = info['quantization']
    # The float32 accuracy printed is the checkpoint's own on the test set.
    args = runs.read_args(world['run'])
    dataset = datasets.resolve(args['dataset'])
    x, y = dataset.eval_sets()['test']
    model, _, _ = runs.restore_ema_model(world['run'])
    float_accuracy = 100 * np.mean(predict.predict(model, x).argmax(1) == y)
    assert q['images'] == len(y) and q['float32'] == pytest.approx(float_accuracy)
    quantized = export.tflite_probabilities(tmp_path / 'q' / export.TFLITE_FILE, x)
    assert q['quantized'] == pytest.approx(100 * np.mean(quantized.argmax(1) == y))
    assert q['change'] == pytest.approx(q['quantized'] - q['float32'])
    assert (f'accuracy {q["quantized"]:.2f}% (float32 {q["float32"]:.2f}%, change '
            f'{q["change"]:+.2f} points)') in printed
    assert info['tflite']['weights'] == 'dynamic-range int8'
    monkeypatch.setenv('ML_DATA', str(tmp_path / 'no_data'))
    with pytest.raises(UserError, match='--quantize measures .* test set'):
        export.export_run(world['run'], tmp_path / 'q2', 'tflite', quantize=True)
    assert not (tmp_path / 'q2').exists()


# ----------------------------------------------------------------------------------------------
# The in-graph decoder against libml/images.py.

def image_cases():
    rng = np.random.RandomState(0)
    px = lambda *shape: rng.randint(0, 256, shape).astype(np.uint8)
    palette = lambda: Image.fromarray(px(9, 7, 3)).convert('P', palette=Image.ADAPTIVE, colors=16)

    def save(im, fmt='PNG', **options):
        b = io.BytesIO()
        im.save(b, fmt, **options)
        return b.getvalue()
    return {
        'rgb': png_bytes(px(9, 7, 3)), 'rgba': png_bytes(px(9, 7, 4), 'RGBA'),
        'grey': png_bytes(px(9, 7), 'L'), 'grey_alpha': png_bytes(px(9, 7, 2), 'LA'),
        'one_bit': png_bytes(px(9, 7) > 127), 'palette': save(palette()),
        'palette_4bit': save(palette(), bits=4),
        'palette_transparent': save(palette(), transparency=3),
        'grey16': png_bytes(rng.randint(0, 65536, (9, 7)).astype(np.uint16)),
        'interlaced_rgb': save(Image.fromarray(px(9, 7, 3)), interlace=1),
        'jpeg': jpeg_bytes(px(16, 12, 3)), 'jpeg_420': jpeg_bytes(px(17, 11, 3), subsampling=2),
        'jpeg_grey': jpeg_bytes(px(16, 12)),
        'gif': save(palette(), 'GIF'), 'bmp': save(Image.fromarray(px(9, 7, 3)), 'BMP'),
    }


def test_in_graph_decoder_equals_the_python_decoder(tmp_path):
    decode = tf.function(images.decode_encoded)
    for name, data in image_cases().items():
        path = tmp_path / name
        path.write_bytes(data)
        expected = images.decode_file(path)
        decoded = decode(tf.constant(data)).numpy()
        np.testing.assert_array_equal(decoded, expected, err_msg=name)
        for c in (1, 3):
            np.testing.assert_array_equal(images.to_model_pixels(decoded, 8, 8, c),
                                          images.to_model_pixels(expected, 8, 8, c), err_msg=name)


def exif_block(orientation, little_endian):
    """EXIF with one entry, the orientation, in either byte order."""
    order = '<' if little_endian else '>'
    return (b'Exif\0\0' + (b'II' if little_endian else b'MM') + struct.pack(order + 'HI', 42, 8)
            + struct.pack(order + 'HHHIHHI', 1, 0x0112, 3, 1, orientation, 0, 0))


def test_in_graph_decoder_applies_exif_orientation(tmp_path):
    stored = np.random.RandomState(2).randint(0, 256, (6, 10, 3)).astype(np.uint8)
    decode = tf.function(images.decode_encoded)
    for orientation in range(1, 9):
        for little in (True, False):
            for fmt, data in (('jpg', jpeg_bytes(stored, exif=exif_block(orientation, little))),
                              ('png', png_bytes(stored, exif=exif_block(orientation, little)))):
                path = tmp_path / f'{orientation}{little}.{fmt}'
                path.write_bytes(data)
                upright = images.decode_file(path)
                assert upright.shape[:2] == ((10, 6) if orientation >= 5 else (6, 10))
                np.testing.assert_array_equal(decode(tf.constant(data)).numpy(), upright,
                                              err_msg=str(path))


def raw_png(width, height, depth, colour, rows, chunks_before=(), chunks_after=()):
    """A PNG written by hand (Pillow cannot write every tRNS and chunk order)."""
    chunk = lambda kind, data: (struct.pack('>I', len(data)) + kind + data
                                + struct.pack('>I', zlib.crc32(kind + data)))
    return (b'\x89PNG\r\n\x1a\n'
            + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, depth, colour, 0, 0, 0))
            + b''.join(chunk(k, d) for k, d in chunks_before)
            + chunk(b'IDAT', zlib.compress(b''.join(b'\0' + r for r in rows)))
            + b''.join(chunk(k, d) for k, d in chunks_after) + chunk(b'IEND', b''))


def test_in_graph_decoder_transparent_colour(tmp_path):
    """tRNS of grey and RGB PNGs at every bit depth, compared as Pillow compares it."""
    trns = lambda *key: [(b'tRNS', struct.pack(f'>{len(key)}H', *key))]
    cases = {
        'grey8': raw_png(4, 1, 8, 0, [bytes([0, 5, 9, 5])], trns(5)),
        'grey1': raw_png(8, 1, 1, 0, [bytes([0b10110010])], trns(1)),
        'grey2': raw_png(4, 1, 2, 0, [bytes([0b00011011])], trns(2)),  # Pillow: never matches
        'grey4_255': raw_png(2, 1, 4, 0, [bytes([0xF3])], trns(255)),  # ... 15 -> 255 does
        'grey16': raw_png(2, 1, 16, 0, [struct.pack('>2H', 0x1234, 0x1235)], trns(0x1234)),
        'rgb8': raw_png(2, 1, 8, 2, [bytes([1, 2, 3, 1, 2, 4])], trns(1, 2, 3)),
        'rgb16': raw_png(2, 1, 16, 2, [struct.pack('>6H', 0x12, 0x56, 0x9a, 0x1200, 0x5600,
                                                   0x9a00)], trns(0x12, 0x56, 0x9a)),
    }
    decode = tf.function(images.decode_encoded)
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        expected = images.decode_file(tmp_path / name)
        assert expected.shape[2] in (2, 4), name  # the key made an alpha channel
        np.testing.assert_array_equal(decode(tf.constant(data)).numpy(), expected, err_msg=name)


def test_in_graph_decoder_documented_difference(tmp_path):
    """EXIF after the first 128 KiB (a PNG's eXIf chunk behind large image data): not applied,
    and that is the only difference."""
    stored = np.random.RandomState(4).randint(0, 256, (200, 240, 3)).astype(np.uint8)
    data = raw_png(240, 200, 8, 2, [row.tobytes() for row in stored],
                   chunks_after=[(b'eXIf', exif_block(6, True)[6:])])
    assert len(data) > images._FileHead.SCAN_BYTES
    (tmp_path / 'late_exif.png').write_bytes(data)
    upright = images.decode_file(tmp_path / 'late_exif.png')
    in_graph = images.decode_encoded(tf.constant(data)).numpy()
    np.testing.assert_array_equal(upright, np.rot90(stored, -1))  # Pillow reads it
    np.testing.assert_array_equal(in_graph, stored)  # the graph does not: turned back


# ----------------------------------------------------------------------------------------------
# Bad input.

def copy_run(run, root, **arg_changes):
    """A copy of `run` (args.json changed by `arg_changes`) under `root`; returns it."""
    import shutil
    copy = root / os.path.basename(run)
    shutil.copytree(run, copy)
    path = copy / 'args' / 'args.json'
    path.write_text(json.dumps(dict(json.loads(path.read_text()), **arg_changes)))
    return copy


def test_bad_input(world, tmp_path, monkeypatch):
    with pytest.raises(UserError, match='holds no checkpoint'):
        empty = copy_run(world['run'], tmp_path / 'empty')
        for f in (empty / 'tf').glob('model.ckpt-*'):
            f.unlink()
        export.export_run(empty, tmp_path / 'o')
    with pytest.raises(UserError, match='another shape') as e:
        export.export_run(copy_run(world['run'], tmp_path / 'wide', filters=8), tmp_path / 'o')
    assert '\n' not in str(e.value)
    assert not (tmp_path / 'o').exists()

    # An existing folder is refused, and kept when replacing it fails half-way.
    out = tmp_path / 'existing'
    out.mkdir()
    (out / 'old.txt').write_text('kept')
    with pytest.raises(UserError, match='--overwrite'):
        export.export_run(world['run'], out)

    def broken(*args, **kwargs):
        raise UserError('disk trouble')
    with monkeypatch.context() as m:
        m.setattr(export, 'write_json', broken)  # the last file written
        with pytest.raises(UserError, match='disk trouble'):
            export.export_run(world['run'], out, 'saved_model', overwrite=True)
    assert os.listdir(out) == ['old.txt'] and sorted(os.listdir(tmp_path)) == [
        'empty', 'existing', 'wide']  # no temporary left
    export.export_run(world['run'], out, 'saved_model', overwrite=True)
    assert sorted(os.listdir(out)) == ['args.json', 'assets', 'export.json', 'fingerprint.pb',
                                       'saved_model.pb', 'variables']
    assert sorted(os.listdir(tmp_path)) == ['empty', 'existing', 'wide']


def test_script_one_line_errors(world):
    result = run_script('scripts/export_model.py', world['run'], f'--out={world["out"]}')
    assert_user_error(result, '--overwrite', str(world['out']))
    assert_user_error(run_script('scripts/export_model.py', world['run']), '--out=DIR')

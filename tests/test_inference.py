"""libml/predict.py: listing, decoding, restoring the EMA model and predicting a folder."""
import csv
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

import libml  # noqa: F401  (before TensorFlow)
import tensorflow as tf

from libml import models, predict, runs
from libml.utils import UserError

CLASSES = ['cat', 'dog', 'frog']
ARGS = dict(arch='resnet', filters=4, repeat=1, scales=1, nclass=3, height=8, width=8, channels=3,
            class_names=CLASSES, dataset='toy.1@6-3', algorithm='RealMix')


def make_run(root, args=ARGS, model_args=None, steps=(1024, 2048)):
    """A run folder in the trainer's layout: args/args.json and tf/model.ckpt-%08d checkpoints.

    The checkpoint at step s holds EMA weights drawn with seed s (not the initial ones, so a
    restore that did nothing would be caught). Returns the run folder.
    """
    run = root / args['dataset'] / 'RealMix_archresnet_filters4'
    (run / 'args').mkdir(parents=True)
    (run / 'args' / 'args.json').write_text(json.dumps(args))
    m = dict(args, **(model_args or {}))
    build = lambda: models.build_model(m['arch'], m['nclass'], m['channels'], m['filters'],
                                       m['repeat'], m['scales'])
    model, ema = build(), build()
    images = tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(model=model, ema_model=ema, images=images)
    prefixes = []
    for step in steps:
        rng = np.random.RandomState(step)
        for v in ema.variables:
            if 'moving_variance' in v.name:
                v.assign(rng.uniform(0.5, 2.0, v.shape).astype(np.float32))
            else:
                v.assign(rng.normal(0, 0.5, v.shape).astype(np.float32))
        images.assign(step)
        prefix = str(run / 'tf' / f'model.ckpt-{step:08d}')
        checkpoint.write(prefix)
        prefixes.append(prefix)
        runs.write_checkpoint_state(str(run / 'tf'), prefix, prefixes)
    return run


def save(path, array, fmt=None, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path, fmt)
    return array


def jpeg_bytes(array):
    b = io.BytesIO()
    Image.fromarray(array).save(b, 'JPEG', quality=95)
    return b.getvalue()


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """A run and a folder of images in class sub-folders, of mixed formats, sizes and modes."""
    root = tmp_path_factory.mktemp('inference')
    run = make_run(root / 'experiments')
    rng = np.random.RandomState(1)
    px = lambda *shape: rng.randint(0, 256, shape).astype(np.uint8)
    d = root / 'images'
    exact = {}  # relative path -> the pixels the model must see (same size: exactly as stored)
    exact['cat/2.png'] = save(d / 'cat' / '2.png', px(8, 8, 3))
    grey = save(d / 'cat' / '10.png', px(8, 8), mode='L')
    exact['cat/10.png'] = np.repeat(grey[:, :, None], 3, 2)
    rgba = save(d / 'cat' / 'deep' / 'rgba.png', px(8, 8, 4), mode='RGBA').astype(np.int64)
    alpha = rgba[:, :, 3:]  # composited on white, rounded (libml/images.py)
    exact['cat/deep/rgba.png'] = ((rgba[:, :, :3] * alpha + 255 * (255 - alpha) + 127) // 255
                                  ).astype(np.uint8)
    save(d / 'dog' / 'big.JPG', px(16, 16, 3))            # upper-case extension, resized
    save(d / 'dog' / 'wide.jpeg', px(10, 20, 3))           # another aspect ratio
    pal = Image.fromarray(px(8, 8, 3)).convert('P', palette=Image.ADAPTIVE, colors=16)
    pal.save(d / 'dog' / 'palette.png')
    exact['dog/palette.png'] = np.asarray(pal.convert('RGB'))
    la = save(d / 'frog' / 'la.png', px(12, 6, 2), mode='LA')  # grey + alpha, resized
    (d / 'frog' / 'named_jpeg.png').write_bytes(jpeg_bytes(px(8, 8, 3)))  # content decides
    # Junk: not images, an undecodable "image", a truncated JPEG (whose header is fine).
    (d / '.DS_Store').write_bytes(b'\0\0\0\1Bud1')
    (d / 'dog' / 'notes.txt').write_text('hello')
    (d / 'cat' / 'broken.png').write_bytes(b'not a png at all')
    data = jpeg_bytes(px(32, 32, 3))
    (d / 'frog' / 'trunc.jpg').write_bytes(data[:len(data) * 2 // 3])
    good = ['cat/2.png', 'cat/10.png', 'cat/deep/rgba.png', 'dog/big.JPG', 'dog/palette.png',
            'dog/wide.jpeg', 'frog/la.png', 'frog/named_jpeg.png']  # natural order of the paths
    labels = [0, 0, 0, 1, 1, 1, 2, 2]
    return dict(root=root, run=run, images=d, exact=exact, good=good, labels=labels, la=la)


def test_list_images_class_folders(world):
    d = world['images']
    paths, labels, names, skipped = predict.list_images(d, CLASSES, 3)
    rel = [os.path.relpath(p, d).replace(os.sep, '/') for p in paths]
    assert rel == world['good'] + ['frog/trunc.jpg']  # its header is fine: caught when decoding
    assert labels.tolist() == world['labels'] + [2] and names == CLASSES
    assert dict(skipped).keys() == {'.DS_Store', 'dog/notes.txt', 'cat/broken.png'}
    assert 'not a PNG or JPEG' in dict(skipped)['dog/notes.txt']
    assert 'cannot be decoded' in dict(skipped)['cat/broken.png']


def test_load_images_converts_and_resizes(world):
    d = world['images']
    paths = [str(d / p) for p in world['good']]
    images = predict.load_images(paths, 8, 8, 3)
    assert images.shape == (8, 8, 8, 3) and images.dtype == np.uint8
    for i, p in enumerate(world['good']):
        if p in world['exact']:
            np.testing.assert_array_equal(images[i], world['exact'][p], err_msg=p)
    la = images[world['good'].index('frog/la.png')]
    assert (la[..., 0] == la[..., 1]).all() and (la[..., 0] == la[..., 2]).all()  # grey stays grey
    grey = predict.load_images(paths[:2], 4, 5, 1)
    assert grey.shape == (2, 4, 5, 1)
    rgb = world['exact']['cat/2.png'].astype(np.float64)
    small = predict.load_images([str(d / 'cat' / '2.png')], 8, 8, 1)[0, :, :, 0]
    np.testing.assert_allclose(small, rgb @ [0.299, 0.587, 0.114], atol=0.51)  # luma
    with pytest.raises(UserError, match='trunc.jpg'):
        predict.load_images([str(d / 'frog' / 'trunc.jpg')], 8, 8, 3)


def test_run_inference_class_folders(world, tmp_path, capsys):
    out = tmp_path / 'out'
    result = predict.run_inference(str(world['run']) + '/', world['images'], out_dir=out)
    printed = capsys.readouterr().out
    n = len(world['good'])
    assert result['n'] == n and result['checkpoint'].endswith('model.ckpt-00002048')  # newest
    assert result['npy'] == str(out / 'toy.1@6-3_pred.npy')  # the run's dataset name by default
    probs = np.load(result['npy'])
    assert probs.shape == (n, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    with open(result['csv'], newline='') as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['file', 'predicted', 'probability', 'true']
    assert [r[0] for r in rows[1:]] == world['good']
    assert [r[3] for r in rows[1:]] == [CLASSES[k] for k in world['labels']]
    predicted = probs.argmax(1)
    assert [r[1] for r in rows[1:]] == [CLASSES[k] for k in predicted]
    np.testing.assert_allclose([float(r[2]) for r in rows[1:]], probs.max(1), atol=1e-5)
    accuracy = 100 * np.mean(predicted == np.array(world['labels']))
    assert result['accuracy'] == pytest.approx(accuracy)
    assert f'Accuracy {accuracy:.2f}%' in printed
    assert result['npy'] in printed and result['csv'] in printed
    assert 'frog/trunc.jpg: cannot be decoded' in printed and '.DS_Store' in printed
    assert ('frog/trunc.jpg', 'cannot be decoded') in result['skipped']
    assert sorted(os.listdir(out)) == ['toy.1@6-3_pred.csv', 'toy.1@6-3_pred.npy']

    # The same as calling the restored EMA model directly on the decoded, resized images.
    model, args, prefix = runs.restore_ema_model(world['run'] / 'tf' / 'model.ckpt-00002048')
    assert args['class_names'] == CLASSES
    images = predict.load_images([str(world['images'] / p) for p in world['good']], 8, 8, 3)
    direct = tf.nn.softmax(model(tf.constant(images, tf.float32), training=False)).numpy()
    np.testing.assert_allclose(probs, direct, atol=1e-5)
    np.testing.assert_allclose(predict.predict(model, images, batch_size=3), direct, atol=1e-5)
    # An older checkpoint holds other weights: the restore really loads them.
    older, _, _ = runs.restore_ema_model(str(world['run'] / 'tf' / 'model.ckpt-00001024.index'))
    assert not np.allclose(predict.predict(older, images), direct, atol=1e-3)


def test_run_inference_flat_folder(world, tmp_path, capsys, monkeypatch):
    flat = tmp_path / 'flat'
    flat.mkdir()
    for i, p in enumerate(world['good'][:5]):
        (flat / f'img{i}{os.path.splitext(p)[1]}').write_bytes((world['images'] / p).read_bytes())
    (flat / 'Thumbs.db').write_bytes(b'junk')
    (flat / 'empty_sub').mkdir()
    monkeypatch.chdir(tmp_path)
    result = predict.run_inference(world['run'] / 'tf', flat, dataset_name='mine.3@450-50')
    printed = capsys.readouterr().out
    assert result['accuracy'] is None and 'Accuracy' not in printed
    assert result['npy'] == str(tmp_path / 'mine.3@450-50_pred.npy')  # default: current folder
    assert np.load(result['npy']).shape == (5, 3)
    with open(result['csv'], newline='') as f:
        rows = list(csv.reader(f))
    assert [r[0] for r in rows[1:]] == [f'img{i}{os.path.splitext(p)[1]}' for i, p in enumerate(world['good'][:5])]
    assert all(r[3] == '' for r in rows[1:])
    assert result['skipped'] == [('Thumbs.db', 'not a PNG or JPEG file')]


def test_folder_label_rules(tmp_path):
    png = lambda p: save(p, np.zeros((8, 8, 3), np.uint8))
    by_index = tmp_path / 'by_index'
    png(by_index / '2' / 'a.png'), png(by_index / '0' / 'b.png')
    _, labels, names, _ = predict.list_images(by_index, CLASSES, 3)
    assert labels.tolist() == [0, 2] and names == CLASSES
    _, labels, names, _ = predict.list_images(by_index, None, 3)
    assert labels.tolist() == [0, 2] and names is None
    with pytest.raises(UserError, match='0..1'):
        predict.list_images(by_index, None, 2)
    named = tmp_path / 'named'
    for c in ('b', 'c', 'a'):
        png(named / c / 'x.png')
    _, labels, names, _ = predict.list_images(named, None, 3)  # no class names: sorted order
    assert labels.tolist() == [0, 1, 2] and names == ['a', 'b', 'c']
    with pytest.raises(UserError, match='3 class subfolders .* for its 4 classes'):
        predict.list_images(named, None, 4)
    with pytest.raises(UserError, match='a, b, c are not classes of the model'):
        predict.list_images(named, CLASSES, 3)
    png(named / 'loose.png')
    with pytest.raises(UserError, match='both images'):
        predict.list_images(named, None, 3)


def test_errors(world, tmp_path):
    run, images = world['run'], world['images']
    with pytest.raises(UserError, match='does not exist; the newest in .* is model.ckpt-00002048'):
        predict.run_inference(run / 'tf' / 'model.ckpt-00000999', images, tmp_path)
    with pytest.raises(UserError, match='nor does its folder'):
        runs.restore_ema_model(tmp_path / 'nowhere' / 'model.ckpt-1')
    no_ckpt = tmp_path / 'no_ckpt'
    (no_ckpt / 'tf').mkdir(parents=True)
    with pytest.raises(UserError, match='holds no checkpoint'):
        runs.restore_ema_model(no_ckpt)
    with pytest.raises(UserError, match='args.json'):
        (no_ckpt / 'tf' / 'model.ckpt-5.index').write_bytes(b'')  # complete: index and data
        (no_ckpt / 'tf' / 'model.ckpt-5.data-00000-of-00001').write_bytes(b'')
        runs.resolve_checkpoint(no_ckpt)
    # args.json says 4 filters and 3 classes; the checkpoint was written by 8 filters, 5 classes.
    wrong = make_run(tmp_path / 'wrong', model_args=dict(filters=8, nclass=5), steps=(64,))
    with pytest.raises(UserError, match='another shape.*resnet filters=4 .* 3 classes') as e:
        runs.restore_ema_model(wrong)
    assert '\n' not in str(e.value) and '[4, 3]' in str(e.value) and '[8, 5]' in str(e.value)
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(UserError, match='no PNG or JPEG images'):
        predict.run_inference(run, empty, tmp_path)
    (empty / 'readme.txt').write_text('x')
    with pytest.raises(UserError, match=r'no PNG or JPEG images .*readme.txt'):
        predict.run_inference(run, empty, tmp_path)
    with pytest.raises(UserError, match='does not exist'):
        predict.run_inference(run, tmp_path / 'missing', tmp_path)
    unknown = tmp_path / 'unknown'
    save(unknown / 'cat' / 'a.png', np.zeros((8, 8, 3), np.uint8))
    save(unknown / 'horse' / 'b.png', np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UserError, match='horse are not classes of the model.*cat, dog, frog'):
        predict.run_inference(run, unknown, tmp_path)
    assert not list(tmp_path.glob('*_pred.*'))

"""scripts/inspect_data.py and libml/inspection.py: planted exact and near duplicates are found
(and nothing else), leaks first, the run's estimates, the split without leaks, one-line errors."""
import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from conftest import REPO, assert_ok, assert_user_error, run_script, write_records
from libml import inspection, records, splits
from libml.utils import UserError

SCRIPT = os.path.join(REPO, 'scripts', 'inspect_data.py')
SHAPE = (32, 32, 3)
NCLASS = 3


def scenes(n, seed):
    """`n` distinct uint8 images [n, 32, 32, 3] with structure at every scale (blobs and detail),
    as photos have: random fields, smoothed."""
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.normal(size=(n,) + SHAPE), (0, 2.5, 2.5, 0))
    x += 0.4 * ndimage.gaussian_filter(rng.normal(size=(n,) + SHAPE), (0, 0.8, 0.8, 0))
    lo, hi = x.min((1, 2, 3), keepdims=True), x.max((1, 2, 3), keepdims=True)
    return np.round(255 * (x - lo) / (hi - lo)).astype(np.uint8)


def shifted(image, dy, dx):
    """The same photo framed `dy`, `dx` pixels further (edges reflected), a little darker."""
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode='reflect').astype(np.float64)
    out = padded[4 + dy:4 + dy + 32, 4 + dx:4 + dx + 32] * 0.8 + 10
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def zoomed(image):
    """The centre 28x28 of the photo enlarged back to 32x32 (a 12% crop), more saturated."""
    crop = Image.fromarray(image[2:30, 2:30]).resize((32, 32), Image.BICUBIC)
    grey = np.asarray(crop.convert('L'), np.float64)[..., None]
    return np.clip(np.round(grey + 1.3 * (np.asarray(crop) - grey)), 0, 255).astype(np.uint8)


def labels_of(n):
    return np.arange(n) % NCLASS


@pytest.fixture
def planted(ml_data):
    """toy.1@12 with validation 4 (`toy.1@12-4`) and its test file, with planted copies:
      test 0  = unlabeled record 9 of the unlabel file  (exact: equal pixels)
      test 1 ~= labeled 3                               (shifted 2 px, darker)
      test 2 ~= validation 1 (unlabel record 1)         (12% crop, more saturated)
      unlabeled 20 ~= unlabeled 25                      (within training; shifted 1, -2)
    every other image distinct. Returns the expected pairs."""
    labeled, unlabel, test = scenes(12, 1), scenes(30, 2), scenes(15, 3)
    unlabel[9] = test[0]
    labeled[3] = shifted(test[1], 2, -1)
    unlabel[1] = zoomed(test[2])
    unlabel[25] = shifted(unlabel[20], 1, -2)
    stem = ml_data / 'SSL' / 'toy.1@12'
    os.makedirs(ml_data / 'SSL')
    write_records(f'{stem}-label.tfrecord', labeled, labels_of(12), NCLASS)
    write_records(f'{stem}-unlabel.tfrecord', unlabel, labels_of(30), NCLASS)
    write_records(ml_data / 'toy-test.tfrecord', test, labels_of(15), NCLASS)
    return {'leaks': {('test', 0, 'unlabeled', 9, True), ('test', 1, 'labeled', 3, False),
                      ('test', 2, 'valid', 1, False)},
            'other': {('unlabeled', 20, 'unlabeled', 25, False)}}


def found(pairs):
    """{(part, position, in, in_position, exact)}, each unordered pair in one orientation."""
    test_first = lambda p: (-inspection.PARTS.index(p[0]), p[1])
    return {(*a, *b, x['exact']) for x in pairs
            for a, b in [sorted([(x['part'], x['position']), (x['in'], x['in_position'])],
                                key=test_first)]}


def test_planted_duplicates_are_found_and_nothing_else(planted, tmp_path):
    out = tmp_path / 'out'
    report = inspection.inspect('toy.1@12-4', str(out), progress=False)
    assert found(report['leaks']) == planted['leaks']
    assert found(report['other_pairs']) == planted['other']
    counts = {(r['part'], r['in']): r for r in report['duplicates']}
    assert counts[('test', 'any')]['near'] == 3 and counts[('test', 'any')]['exact'] == 1
    assert counts[('test', 'unlabeled')]['exact'] == 1
    assert counts[('valid', 'labeled')]['near'] == 0
    assert counts[('unlabeled', 'unlabeled')]['near'] == 2  # both images of the pair
    # Leaks are listed first, and the records to drop are the training-side copies.
    assert [r['part'] for r in report['duplicates'][:4]] == ['test'] * 4
    assert report['leaked_records'] == {'labeled': [3], 'unlabeled': [9], 'valid': [1]}
    # Every near pair is within the threshold, exact ones at distance 0.
    for x in report['leaks'] + report['other_pairs']:
        assert (x['distance'] == 0) == x['exact'] and x['distance'] <= 0.15
    assert report['balance']['labeled']['counts'] == [4, 4, 4]
    assert report['balance']['valid']['counts'] == [2, 1, 1]
    assert report['parts']['unlabeled']['images'] == 26
    written = json.loads((out / 'report.json').read_text())
    assert written['leaks'] == report['leaks']
    for picture in ('pairs.png', 'balance.png'):
        assert Image.open(out / picture).format == 'PNG'
    with pytest.raises(UserError, match='exists'):
        inspection.inspect('toy.1@12-4', str(out), progress=False)


def test_threshold_decides_and_leaks_only_skips_training_pairs(planted, tmp_path):
    strict = inspection.inspect('toy.1@12-4', str(tmp_path / 'a'), threshold=0.0,
                                progress=False)
    assert found(strict['leaks']) == {('test', 0, 'unlabeled', 9, True)}  # exact only
    quick = inspection.inspect('toy.1@12-4', str(tmp_path / 'b'), leaks_only=True,
                               progress=False)
    assert found(quick['leaks']) == planted['leaks'] and quick['other_pairs'] == []
    assert ('unlabeled', 'unlabeled') not in {(r['part'], r['in']) for r in quick['duplicates']}


def test_aligner_tolerates_copies_not_other_images():
    base = scenes(6, 5)
    copies = np.stack([shifted(base[0], 3, 0), zoomed(base[1]), base[2] // 2 + 60])
    grey = np.concatenate([base, copies]).astype(np.float64).mean(3).round().astype(np.uint8)
    aligner = inspection.Aligner(32)
    a, b = np.array([0, 1, 2, 0, 3, 4]), np.array([6, 7, 8, 3, 4, 5])
    sim = aligner.similarity(grey, a, b)
    assert (sim[:3] > 0.95).all() and (sim[3:] < 0.5).all(), sim
    # Symmetric enough that the order of a pair does not decide.
    np.testing.assert_allclose(aligner.similarity(grey, b, a)[:3], sim[:3], atol=0.03)


def test_exact_copies_within_and_between_parts():
    digests = np.array([5, 7, 5, 9, 7, 1], np.uint64)  # parts [0, 3) and [3, 6)
    has, other = inspection.exact_copies(digests, [(0, 3), (3, 6)])
    assert has[:, 0].tolist() == [True, False, True, False, True, False]
    assert has[:, 1].tolist() == [False, True, False, False, False, False]  # 4 is itself
    assert other[0, 0] == 2 and other[2, 0] == 0 and other[4, 0] == 1 and other[1, 1] == 4


def test_ood_summary_against_the_truth():
    part = lambda conf, labels: inspection.Part('x', '', np.arange(len(conf)), np.asarray(labels),
                                                None, None, None, np.asarray(conf),
                                                np.arange(len(conf)) % 2)
    valid = part(np.linspace(0.5, 1.0, 101), [0] * 101)
    # 60 in distribution (confident), 40 out (not); 4 in-distribution ones fall below too.
    conf = [0.9] * 56 + [0.2] * 4 + [0.1] * 40
    labels = [1] * 60 + [-1] * 40
    summary = inspection.ood_summary(part(conf, labels), valid, 2, mismatch=True)
    assert summary['threshold'] == pytest.approx(0.525)
    q = summary['validation_below']
    assert q == pytest.approx(5 / 101)
    assert summary['flagged_share'] == pytest.approx(0.44)
    assert summary['ood_estimate'] == pytest.approx((0.44 - q) / (1 - q))
    assert summary['precision'] == pytest.approx(40 / 44) and summary['recall'] == 1.0
    assert summary['true_ood_share'] == pytest.approx(0.4)
    fixed = inspection.ood_summary(part(conf, labels), None, 2, threshold=0.15)
    assert fixed['flagged_share'] == pytest.approx(0.4) and 'precision' not in fixed
    with pytest.raises(UserError, match='--ood_threshold'):
        inspection.ood_summary(part(conf, labels), None, 2)


def fake_run(root, dataset, nclass=NCLASS, size=32):
    """A run folder as the trainer leaves it (args.json, one checkpoint) with random EMA weights,
    as tests/test_inference.py makes them."""
    import tensorflow as tf
    from libml import models, runs
    args = dict(arch='resnet', filters=4, repeat=1, scales=1, nclass=nclass, height=size,
                width=size, channels=3, dataset=dataset, algorithm='RealMix')
    run = root / dataset / 'RealMix_test'
    (run / 'args').mkdir(parents=True)
    (run / 'args' / 'args.json').write_text(json.dumps(args))
    build = lambda: models.build_model('resnet', nclass, 3, 4, 1, 1)
    model, ema = build(), build()
    rng = np.random.RandomState(0)
    for v in ema.variables:
        shape = v.shape
        v.assign((rng.uniform(0.5, 2, shape) if 'moving_variance' in v.name
                  else rng.normal(0, 0.5, shape)).astype(np.float32))
    prefix = str(run / 'tf' / 'model.ckpt-00001024')
    tf.train.Checkpoint(model=model, ema_model=ema, images=tf.Variable(1024, dtype=tf.int64)
                        ).write(prefix)
    runs.write_checkpoint_state(str(run / 'tf'), prefix, [prefix])
    return run


def test_run_estimates_match_the_models_predictions(planted, ml_data, tmp_path):
    from sklearn.metrics import precision_score, recall_score
    from libml import datasets, pipeline, predict, runs
    # A _mismatch dataset: a third of its unlabeled images are out of distribution (label -1).
    unlabel, labels = scenes(30, 2), labels_of(30)
    labels[np.arange(30) % 3 == 2] = -1
    write_records(ml_data / 'SSL' / 'toy_mismatch33.1@12-unlabel.tfrecord', unlabel, labels, NCLASS)
    name = 'toy_mismatch33.1@12-6'
    run = fake_run(tmp_path / 'experiments', name)
    report = inspection.inspect(name, str(tmp_path / 'out'), run=str(run), progress=False)
    got = report['run']
    # The same numbers from the model directly, on the images the trainer would use.
    dataset = datasets.resolve(name)
    model, _, _ = runs.restore_ema_model(str(run))
    probs = {k: predict.predict(model, pipeline.load_arrays(getattr(dataset, k), SHAPE)[0])
             for k in ('unlabeled', 'valid')}
    threshold = np.quantile(probs['valid'].max(1), inspection.VALID_QUANTILE)
    flagged = probs['unlabeled'].max(1) < threshold
    truth = pipeline.load_arrays(dataset.unlabeled, SHAPE)[1] < 0
    assert got['threshold'] == pytest.approx(threshold, rel=1e-5)
    assert got['flagged_share'] == pytest.approx(flagged.mean())
    assert got['precision'] == pytest.approx(precision_score(truth, flagged, zero_division=0))
    assert got['recall'] == pytest.approx(recall_score(truth, flagged, zero_division=0))
    assert got['true_ood_share'] == pytest.approx(truth.mean())
    kept = probs['unlabeled'].argmax(1)[~flagged]
    assert got['predicted_counts'] == np.bincount(kept, minlength=NCLASS).tolist()
    assert Image.open(tmp_path / 'out' / 'confidence.png').format == 'PNG'
    # A run of another dataset (other class count) is refused before anything is read.
    other = fake_run(tmp_path / 'other', 'five.1@10-5', nclass=5)
    with pytest.raises(UserError, match=r'--run=.*\(5 classes.*has 3 classes'):
        inspection.inspect(name, str(tmp_path / 'out2'), run=str(other), progress=False)


def test_plan_split_exclude_keeps_the_rest_of_the_split():
    labels = np.arange(60) % 3
    full = splits.plan_split(labels, seed=2, size=9)
    dropped = [full['label'][0], full['label'][4], full['unlabel'][0], full['unlabel'][30]]
    plan = splits.plan_split(labels, seed=2, size=9, exclude=dropped)
    kept_label = set(full['label'].tolist()) - set(dropped)
    assert kept_label <= set(plan['label'].tolist()) and len(plan['label']) == 9
    assert not set(dropped) & set(plan['label'].tolist() + plan['unlabel'].tolist())
    assert sorted(plan['label'].tolist() + plan['unlabel'].tolist()) == sorted(
        set(range(60)) - set(dropped))
    assert np.bincount(labels[plan['label']]).tolist() == [3, 3, 3]
    unchanged = splits.plan_split(labels, seed=2, size=9, exclude=[])
    assert unchanged['label'].tolist() == full['label'].tolist()
    assert unchanged['unlabel'].tolist() == full['unlabel'].tolist()
    with pytest.raises(UserError, match='outside the input'):
        splits.plan_split(labels, seed=2, size=9, exclude=[60])


def test_drop_leaks_writes_a_new_split_and_modifies_nothing(ml_data, tmp_path):
    train, test = scenes(40, 7), scenes(10, 8)
    copies = {5: test[0], 17: shifted(test[3], 1, 2), 33: zoomed(test[6])}  # train id -> copy
    for i, image in copies.items():
        train[i] = image
    write_records(ml_data / 'toy-train.tfrecord', train, labels_of(40), NCLASS)
    write_records(ml_data / 'toy-test.tfrecord', test, labels_of(10), NCLASS)
    splits.create_split(str(ml_data / 'SSL' / 'toy'), [str(ml_data / 'toy-train.tfrecord')],
                        seed=1, size=9, quiet=True)
    before = {p: p.stat().st_mtime_ns for p in ml_data.rglob('*') if p.is_file()}
    report = inspection.inspect('toy.1@9-6', str(tmp_path / 'out'), drop_leaks=True,
                                progress=False)
    assert report['noleak']['dataset'] == 'toy_noleak.1@9-6'
    assert report['noleak']['excluded_ids'] == sorted(copies)
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing existing touched
    new_map = json.loads((ml_data / 'SSL' / 'toy_noleak.1@9-map.json').read_text())
    old_map = json.loads((ml_data / 'SSL' / 'toy.1@9-map.json').read_text())
    assert new_map['excluded'] == sorted(copies)
    assert set(new_map['label'] + new_map['unlabel']) == set(range(40)) - set(copies)
    assert set(old_map['label']) - set(copies) <= set(new_map['label'])
    assert len(new_map['label']) == 9
    # The new dataset is complete: inspecting it finds no leak.
    clean = inspection.inspect('toy_noleak.1@9-6', str(tmp_path / 'clean'), progress=False)
    assert clean['leaks'] == [] and clean['parts']['test']['images'] == 10
    assert records.read_meta(str(ml_data / 'toy_noleak-test.tfrecord'))['count'] == 10
    with pytest.raises(UserError, match='toy_noleak.1@9 was written before'):
        inspection.inspect('toy.1@9-6', str(tmp_path / 'again'), drop_leaks=True, progress=False)


def test_drop_leaks_that_cannot_keep_the_split_keeps_the_report(ml_data, tmp_path):
    # 4 of the 6 images of class 0 are copies of test images: 3 labeled ones cannot be kept.
    train, test = scenes(18, 7), scenes(6, 8)
    for k, i in enumerate((0, 3, 6, 9)):
        train[i] = test[k]
    write_records(ml_data / 'toy-train.tfrecord', train, labels_of(18), NCLASS)
    write_records(ml_data / 'toy-test.tfrecord', test, labels_of(6), NCLASS)
    splits.create_split(str(ml_data / 'SSL' / 'toy'), [str(ml_data / 'toy-train.tfrecord')],
                        seed=1, size=9, quiet=True)
    with pytest.raises(UserError, match='class 0 keeps 2 .*the split was not written; the report'):
        inspection.inspect('toy.1@9-3', str(tmp_path / 'out'), drop_leaks=True, progress=False)
    report = json.loads((tmp_path / 'out' / 'report.json').read_text())
    assert report['noleak']['excluded_ids'] == [0, 3, 6, 9]
    assert not list((ml_data / 'SSL').glob('toy_noleak*'))


def test_drop_leaks_refuses_derived_datasets_and_empty_parts_are_named(planted, ml_data,
                                                                        tmp_path):
    with pytest.raises(UserError, match='run it on toy.1@12-4'):
        inspection.inspect('toy_aug2.1@12-4', str(tmp_path / 'x'), drop_leaks=True,
                           progress=False)
    # A _mismatch dataset whose first 2 unlabeled records are out of distribution: no validation.
    labels = labels_of(30)
    labels[:2] = -1
    write_records(ml_data / 'SSL' / 'toy_mismatch9.1@12-unlabel.tfrecord', scenes(30, 4), labels,
                  NCLASS)
    with pytest.raises(UserError, match='validation part of toy_mismatch9.1@12-2 is empty'):
        inspection.inspect('toy_mismatch9.1@12-2', str(tmp_path / 'y'), progress=False)
    assert not (tmp_path / 'y').exists()


def test_script_end_to_end_and_one_line_errors(planted, ml_data, tmp_path):
    out = tmp_path / 'out'
    result = assert_ok(run_script(SCRIPT, 'toy.1@12-4', f'--out_dir={out}'))
    lines = result.stdout.splitlines()
    leak_rows = [line for line in lines if 'test with a copy in' in line]
    assert leak_rows and 'test with a copy in labeled' in leak_rows[0]
    assert 'test with a copy in any other part' in result.stdout
    assert f'wrote {out}' in result.stdout and (out / 'pairs.png').exists()
    assert_user_error(run_script(SCRIPT, 'nosuch.1@5-2', f'--out_dir={tmp_path / "x"}'),
                      'nosuch.1@5-label.tfrecord does not exist', 'create_split.py')
    with pytest.raises(UserError, match='40 validation images.*smaller -VALID'):
        inspection.inspect('toy.1@12-40', str(tmp_path / 'y'), progress=False)
    with pytest.raises(UserError, match="DATASET='toy.1@x' is not a dataset name"):
        inspection.inspect('toy.1@x', str(tmp_path / 'y'), progress=False)

"""filter_dataset.py (README 2.3) and scripts/rename_files.py (README 1.2.1)."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, assert_ok, assert_user_error, run_script
from libml import names, records
from libml import rename as rn
from libml.utils import UserError
from test_create_split import NAMES, SHAPE, read_output, write_input

from libml import class_filter as fd

RENAME = os.path.join(REPO, 'scripts', 'rename_files.py')


# ----------------------------------------------------------------------------------------------
# filter_dataset.py

@pytest.fixture
def labeled(ml_data):
    """60 records, labels 0..9 in turn, content ids 0..59."""
    labels = np.arange(60) % 10
    return write_input(ml_data / 'cifar10-test.tfrecord', labels), labels


def test_filter_keeps_only_the_classes_in_order_renumbered(ml_data, labeled):
    path, labels = labeled
    out = ml_data / 'cifar6-test.tfrecord'
    kept, read = fd.filter_records(path, str(out), '2,3,4,5,6,7', quiet=True)
    ids, out_labels = read_output(out)
    expected = [i for i in range(60) if labels[i] in (2, 3, 4, 5, 6, 7)]
    assert (kept, read) == (36, 60)
    # Same records in the same order, labels 2..7 renumbered 0..5: the model gets 6 outputs.
    assert ids.tolist() == expected and out_labels.tolist() == (labels[expected] - 2).tolist()
    meta = records.read_meta(str(out))
    assert meta['count'] == 36 and meta['nclass'] == 6 and meta['class_names'] == NAMES[2:8]
    assert meta['class_map'] == {str(c): c - 2 for c in range(2, 8)}
    assert meta['label_counts'] == {str(c): 6 for c in range(6)}
    assert (meta['height'], meta['width'], meta['channels']) == SHAPE
    # Named like a dataset's file: its class mapping names the kept classes (per-class accuracy).
    assert names.read_class_names('cifar6', str(ml_data)) == NAMES[2:8]


def test_filter_norelabel_keeps_labels_as_they_are(ml_data, labeled):
    path, labels = labeled
    out = ml_data / 'cifar6-test.tfrecord'
    fd.filter_records(path, str(out), '2,3,4,5,6,7', quiet=True, relabel=False)
    ids, out_labels = read_output(out)
    assert out_labels.tolist() == labels[ids].tolist() and set(out_labels) == {2, 3, 4, 5, 6, 7}
    meta = records.read_meta(str(out))
    assert meta['nclass'] == 10 and meta['class_names'] == NAMES and 'class_map' not in meta
    assert not (ml_data / 'cifar6_class_mappings.json').exists()


def readme_mismatch_files(ml_data):
    """README 2.3's label file and 50 % unlabeled file, filtered in the README's order."""
    write_input(ml_data / 'SSL' / 'cifar10.1@250-label.tfrecord', np.arange(30) % 10)
    unlabel = write_input(ml_data / 'SSL' / 'cifar10.1@250-unlabel.tfrecord', np.arange(50) % 10,
                          first_id=100)
    fd.filter_records(str(ml_data / 'SSL' / 'cifar10.1@250-label.tfrecord'),
                      str(ml_data / 'SSL' / 'cifar6.1@250-label.tfrecord'), '2,3,4,5,6,7', quiet=True)
    return unlabel, str(ml_data / 'SSL' / 'cifar6_mismatch50.1@250-unlabel.tfrecord')


def test_filter_mismatch_output_maps_to_its_base_and_ood_to_minus_one(ml_data):
    unlabel, out = readme_mismatch_files(ml_data)
    fd.filter_records(unlabel, out, '0,1,6,7', quiet=True)
    ids, labels = read_output(out)
    original = (ids - 100) % 10
    assert set(original) == {0, 1, 6, 7}
    # cifar6's classes 2..7 -> 0..5: 6 -> 4, 7 -> 5; 0 and 1 are no class of the model: -1.
    assert labels.tolist() == [{0: -1, 1: -1, 6: 4, 7: 5}[c] for c in original]
    meta = records.read_meta(out)
    assert meta['class_map'] == {'0': -1, '1': -1, '6': 4, '7': 5}
    assert meta['nclass'] == 6 and meta['class_names'] == NAMES[2:8]
    assert meta['label_counts'] == {'-1': 10, '4': 5, '5': 5}


def test_filter_mismatch_output_errors(ml_data):
    unlabel = write_input(ml_data / 'SSL' / 'cifar10.1@250-unlabel.tfrecord', np.arange(20) % 10)
    out = str(ml_data / 'SSL' / 'cifar6_mismatch50.1@250-unlabel.tfrecord')
    # Its base cifar6 is not filtered yet: the classes of the model are unknown.
    with pytest.raises(UserError, match='cifar6, but it has no filtered label or test file yet.*'
                                        '--in_distribution'):
        fd.filter_records(unlabel, out, '0,1,6,7', quiet=True)
    # Given explicitly, it works without the base.
    fd.filter_records(unlabel, out, '0,1,6,7', quiet=True, in_distribution='2,3,4,5,6,7')
    assert sorted(set(read_output(out)[1])) == [-1, 4, 5]
    fd.filter_records(str(ml_data / 'SSL' / 'cifar10.1@250-unlabel.tfrecord'),
                      str(ml_data / 'SSL' / 'cifar6.1@250-label.tfrecord'), '2,3,4,5,6,7', quiet=True)
    with pytest.raises(UserError, match='--in_distribution=2,3 disagrees with the classes 2,3,4,5,6,7'):
        fd.filter_records(unlabel, out, '0,1,6,7', quiet=True, in_distribution='2,3')
    with pytest.raises(UserError, match='--norelabel: .*cifar6.1@250-label.tfrecord was relabeled'):
        fd.filter_records(unlabel, out, '0,1,6,7', quiet=True, relabel=False)
    with pytest.raises(UserError, match="--in_distribution='2,x' must be comma-separated"):
        fd.filter_records(unlabel, out, '0,1', quiet=True, in_distribution='2,x')
    # A base filtered with --norelabel: the mismatch file must keep its labels too.
    fd.filter_records(str(ml_data / 'SSL' / 'cifar10.1@250-unlabel.tfrecord'),
                      str(ml_data / 'SSL' / 'cifar6.1@250-label.tfrecord'), '2,3,4,5,6,7',
                      quiet=True, relabel=False)
    with pytest.raises(UserError, match='keeps the labels of its input.*pass --norelabel'):
        fd.filter_records(unlabel, out, '0,1,6,7', quiet=True)


def test_mismatch_validation_holds_only_in_distribution_images(ml_data):
    """The trainer's validation set of a _mismatch dataset: the labeled records among the first
    VALID, never an out-of-distribution one; those OOD records are not trained on either."""
    from libml import datasets, pipeline
    unlabel, out = readme_mismatch_files(ml_data)
    write_input(ml_data / 'cifar10-test.tfrecord', np.arange(20) % 10)
    fd.filter_records(str(ml_data / 'cifar10-test.tfrecord'), str(ml_data / 'cifar6-test.tfrecord'),
                      '2,3,4,5,6,7', quiet=True)
    fd.filter_records(unlabel, out, '0,1,6,7', quiet=True)
    _, all_labels = read_output(out)          # 0, 1, 6, 7 in turn -> -1, -1, 4, 5
    ds = datasets.resolve('cifar6_mismatch50.1@250-8')
    assert ds.nclass == 6 and ds.class_names == NAMES[2:8]
    _, valid = pipeline.load_arrays(ds.valid, ds.shape)
    assert valid.tolist() == [x for x in all_labels[:8] if x >= 0] == [4, 5, 4, 5]
    _, train = pipeline.load_arrays(ds.unlabeled, ds.shape)
    assert train.tolist() == all_labels[8:].tolist()
    # A validation prefix of out-of-distribution images only: one line naming -VALID.
    with pytest.raises(UserError, match='first 2 records .* are all out of distribution.*-VALID'):
        pipeline.load_arrays(datasets.resolve('cifar6_mismatch50.1@250-2').valid, ds.shape)
    # Only mismatch datasets (and those derived from them) drop unlabeled validation records.
    assert names.is_mismatch('cifar6_mismatch50_aug2') and not names.is_mismatch('cifar6_aug2')


def test_filter_unlabeled_records_only_with_keep_unlabeled(ml_data):
    path = write_input(ml_data / 'x-unlabeled.tfrecord', [0, -1, 1, -1, 2], class_names=['a', 'b', 'c'])
    fd.filter_records(path, str(ml_data / 'a.tfrecord'), [0, 2], quiet=True)
    assert read_output(ml_data / 'a.tfrecord')[1].tolist() == [0, 1]      # classes 0, 2 -> 0, 1
    fd.filter_records(path, str(ml_data / 'b.tfrecord'), [0, 2], keep_unlabeled=True, quiet=True)
    assert read_output(ml_data / 'b.tfrecord')[1].tolist() == [0, -1, -1, 1]


@pytest.mark.parametrize('class_filter, words', [
    ('a,b', ['--class_filter', 'comma-separated']),
    ('', ['--class_filter is required']),
    ('2,10', ['class 10 does not exist', '0..9']),
    ('-1', ['class -1 does not exist']),
])
def test_filter_bad_class_filter(ml_data, labeled, class_filter, words):
    with pytest.raises(UserError) as e:
        fd.filter_records(labeled[0], str(ml_data / 'out.tfrecord'), class_filter, quiet=True)
    for word in words:
        assert word in str(e.value)
    assert not (ml_data / 'out.tfrecord').exists()


def test_filter_other_errors(ml_data, labeled):
    path, _ = labeled
    with pytest.raises(UserError, match=r'cifar10.1@250-label.tfrecord does not exist; .*create_split'):
        fd.filter_records(str(ml_data / 'SSL' / 'cifar10.1@250-label.tfrecord'),
                          str(ml_data / 'o.tfrecord'), '1', quiet=True)
    with pytest.raises(UserError, match='is the input file'):
        fd.filter_records(path, path, '1', quiet=True)
    unlabeled = write_input(ml_data / 'u.tfrecord', [-1] * 4)
    with pytest.raises(UserError, match='nothing written.*--keep_unlabeled'):
        fd.filter_records(unlabeled, str(ml_data / 'o.tfrecord'), '1', quiet=True)
    # A file without label counts in its metadata: "nothing kept" is found while reading.
    os.remove(names.meta_path(unlabeled))
    with pytest.raises(UserError, match='nothing written'):
        fd.filter_records(unlabeled, str(ml_data / 'o.tfrecord'), '1', quiet=True)
    assert not (ml_data / 'o.tfrecord').exists()
    assert not [f for f in os.listdir(ml_data) if f.startswith('.')]


def test_filter_readme_commands(ml_data):
    """README 2.3's first two commands, as written (full-path --save_name, used once)."""
    write_input(ml_data / 'cifar10-test.tfrecord', np.arange(40) % 10)
    write_input(ml_data / 'SSL' / 'cifar10.1@250-label.tfrecord', np.arange(30) % 10)
    env = dict(os.environ, ML_DATA=str(ml_data), TF_CPP_MIN_LOG_LEVEL='2')
    result = subprocess.run(
        'python filter_dataset.py --class_filter=2,3,4,5,6,7 '
        '--filter_dataset=$ML_DATA/SSL/cifar10.1@250-label.tfrecord '
        '--save_name=$ML_DATA/SSL/cifar6.1@250-label.tfrecord && '
        'python filter_dataset.py --class_filter=2,3,4,5,6,7 '
        '--filter_dataset=$ML_DATA/cifar10-test.tfrecord --save_name=$ML_DATA/cifar6-test.tfrecord',
        shell=True, cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(env, PATH=os.path.dirname(sys.executable) + os.pathsep + env.get('PATH', '')))
    assert_ok(result)
    assert f'wrote {ml_data}/SSL/cifar6.1@250-label.tfrecord: 18 of 30 records' in result.stdout
    assert f'wrote {ml_data}/cifar6-test.tfrecord: 24 of 40 records' in result.stdout
    assert 'labels 2->0, 3->1, 4->2, 5->3, 6->4, 7->5' in result.stdout
    assert sorted(set(read_output(ml_data / 'cifar6-test.tfrecord')[1])) == [0, 1, 2, 3, 4, 5]
    assert not any('SSL' in d for d, _, _ in os.walk(ml_data / 'SSL' / 'SSL'))  # no doubled path


def test_filter_cli_error(ml_data):
    assert_user_error(run_script(os.path.join(REPO, 'filter_dataset.py'), '--class_filter=1,x',
                                 '--filter_dataset=a.tfrecord', '--save_name=b.tfrecord'),
                      '--class_filter', 'comma-separated')


# ----------------------------------------------------------------------------------------------
# rename_files.py

def make_tree(root, files):
    """Creates files (relative paths) whose content is their own original path."""
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    return root


def snapshot(root):
    """{relative path: content} of every file (the rename logs left out)."""
    out = {}
    for folder, _, files in os.walk(root):
        for f in files:
            if not f.startswith('rename_log-'):
                full = os.path.join(folder, f)
                out[os.path.relpath(full, root)] = open(full, encoding='utf-8').read()
    return out


TREE = ['train/cat/a.png', 'train/cat/b10.png', 'train/cat/b2.PNG', 'train/dog/x.png',
        'train/chat noir/é x.png', 'test/cat/t.png', 'test/dog/u.png',
        'unlabeled/u1.png', 'unlabeled/more/u2.png', 'unlabeled/photo.jpg',
        'train/cat/notes.txt', 'train/cat/.hidden.png']


def test_plan_names_and_numbers(tmp_path):
    root = make_tree(tmp_path / 'ds', TREE)
    plan, done = rn.plan_renames(str(root), index=5, filetype='png')
    assert done == 0
    assert plan == [
        ('test/cat/t.png', 'test/cat/5_cat.png'),
        ('test/dog/u.png', 'test/dog/6_dog.png'),
        ('train/cat/a.png', 'train/cat/7_cat.png'),
        ('train/cat/b2.PNG', 'train/cat/8_cat.png'),   # numbers in names sort as numbers
        ('train/cat/b10.png', 'train/cat/9_cat.png'),
        ('train/chat noir/é x.png', 'train/chat noir/10_chat noir.png'),
        ('train/dog/x.png', 'train/dog/11_dog.png'),
        ('unlabeled/more/u2.png', 'unlabeled/more/12.png'),  # no class: number only
        ('unlabeled/u1.png', 'unlabeled/13.png'),
    ]


def test_jpg_matches_jpeg_in_any_case(tmp_path):
    root = make_tree(tmp_path / 'ds', ['train/cat/a.JPG', 'train/cat/b.jpeg', 'train/cat/c.png'])
    plan, _ = rn.plan_renames(str(root), 0, 'jpg')
    assert plan == [('train/cat/a.JPG', 'train/cat/0_cat.jpg'),
                    ('train/cat/b.jpeg', 'train/cat/1_cat.jpeg')]


def test_rename_undo_and_rerun(tmp_path):
    root = make_tree(tmp_path / 'ds', TREE)
    before = snapshot(root)
    plan, done, log = rn.rename(str(root), 0, 'png')
    after = snapshot(root)
    assert len(after) == len(before)  # nothing lost, nothing overwritten
    for old, new in plan:
        assert after[new] == before[old]
    assert after['train/cat/notes.txt'] == before['train/cat/notes.txt']
    assert after['unlabeled/photo.jpg'] == before['unlabeled/photo.jpg']
    assert os.path.basename(log).startswith('rename_log-') and log.endswith('.tsv')
    with open(log, encoding='utf-8', newline='') as f:
        assert list(csv.reader(f, delimiter='\t'))[1:] == [list(p) for p in plan]

    # Renaming a renamed folder again changes nothing; a new image gets a fresh number.
    assert rn.rename(str(root), 0, 'png')[:2] == ([], len(plan))
    make_tree(root, ['train/dog/new.png'])
    assert rn.plan_renames(str(root), 0, 'png') == ([('train/dog/new.png', 'train/dog/9_dog.png')],
                                                    len(plan))
    os.remove(root / 'train/dog/new.png')

    assert rn.undo(log) == (len(plan), 0)
    assert snapshot(root) == before
    assert rn.undo(log) == (0, len(plan))  # undoing twice is harmless


def test_never_overwrites(tmp_path):
    root = make_tree(tmp_path / 'ds', ['train/cat/a.png', 'train/cat/b.png'])
    (root / 'train/cat/1_cat.png').mkdir()  # something not in the plan holds a planned name
    before = snapshot(root)
    with pytest.raises(UserError, match='taken by other files.*1_cat.png.*nothing was renamed'):
        rn.rename(str(root), 0, 'png')
    assert snapshot(root) == before and not list(root.glob('rename_log-*'))


def test_interrupted_run_is_undone(tmp_path, monkeypatch):
    root = make_tree(tmp_path / 'ds', TREE)
    before = snapshot(root)
    real, calls = os.rename, []

    def flaky(src, dst):
        calls.append(src)
        if len(calls) == 4:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(rn.os, 'rename', flaky)
    with pytest.raises(KeyboardInterrupt):
        rn.rename(str(root), 0, 'png')
    monkeypatch.setattr(rn.os, 'rename', real)
    (log,) = root.glob('rename_log-*.tsv')
    assert rn.undo(str(log)) == (3, 6)
    assert snapshot(root) == before


def test_undo_refuses_conflicts(tmp_path):
    root = make_tree(tmp_path / 'ds', ['train/cat/a.png', 'train/cat/b.png'])
    _, _, log = rn.rename(str(root), 0, 'png')
    make_tree(root, ['train/cat/a.png'])  # the old name is taken again
    state = snapshot(root)
    with pytest.raises(UserError, match='a.png and train/cat/0_cat.png both exist.*nothing was renamed'):
        rn.undo(log)
    assert snapshot(root) == state


def test_image_without_class_folder_is_an_error(tmp_path):
    root = make_tree(tmp_path / 'ds', ['train/a.png'])
    with pytest.raises(UserError, match='directly in train/ has no class'):
        rn.plan_renames(str(root), 0, 'png')


def test_cli_dry_run_changes_nothing_then_renames(tmp_path):
    root = make_tree(tmp_path / 'my data', TREE)
    before = snapshot(root)
    result = assert_ok(run_script(RENAME, '--targetdir', root, '--index', '0', '--filetype', 'png',
                                  '--dry_run'))
    assert 'train/chat noir/é x.png -> train/chat noir/5_chat noir.png' in result.stdout
    assert 'nothing changed' in result.stdout
    assert snapshot(root) == before and not list(root.glob('rename_log-*'))
    result = assert_ok(run_script(RENAME, '--targetdir', f'{root}/', '--index', '0',
                                  '--filetype', 'png'))
    assert 'renamed 9 file(s)' in result.stdout
    (log,) = root.glob('rename_log-*.tsv')
    assert str(log) in result.stdout
    assert_ok(run_script(RENAME, '--undo', log))
    assert snapshot(root) == before
    assert_user_error(run_script(RENAME, '--targetdir', root / 'nope'), 'is not a folder')
    assert_user_error(run_script(RENAME, '--undo', root / 'x.tsv'), '--undo', 'no such file')

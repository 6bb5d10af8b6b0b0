"""benchmarks/tensorboard_screenshots.py: the dashboards of a tiny run as headless Chromium draws
them (skipped without Chromium), and its one-line error for a logdir without runs."""
import itertools
import os
import shutil

import numpy as np
import pytest

from conftest import assert_ok, assert_user_error, make_ssl_dataset, run_script

SCRIPT = 'benchmarks/tensorboard_screenshots.py'
PAGES = ('scalars', 'images', 'hparams', 'histograms')
BROWSERS = ('chromium', 'chromium-browser', 'google-chrome')


def test_logdir_without_runs_is_a_one_line_error(tmp_path):
    (tmp_path / 'runs' / 'digits.1@50-200').mkdir(parents=True)   # a train_dir, no event files
    result = assert_user_error(run_script(SCRIPT, f'--logdir={tmp_path / "runs"}',
                                          f'--out={tmp_path / "out"}'),
                               f'--logdir={tmp_path / "runs"}', 'no event files')
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / 'out').exists()


@pytest.mark.skipif(not any(map(shutil.which, BROWSERS)),
                    reason='no Chromium: apt-get install chromium')
def test_screenshots_of_a_tiny_run_show_each_page(ml_data, tmp_path):
    """A 1-kimg RealMix run (hparams/, images, the collapse histogram): four PNGs, none blank,
    no two alike, nothing said about missing summaries, no temporary file left."""
    from PIL import Image
    make_ssl_dataset(str(ml_data), class_names=['cat', 'dog', 'bird'])
    logdir, out = tmp_path / 'runs', tmp_path / 'shots'
    assert_ok(run_script('realmix.py', '--dataset=toy.1@12-6', f'--train_dir={logdir}',
                         '--filters=4', '--repeat=1', '--batch=8', '--train_kimg=1',
                         '--report_kimg=1', '--save_kimg=1', '--augment=svhn'))
    result = assert_ok(run_script(SCRIPT, f'--logdir={logdir}', f'--out={out}', '--prefix=tb_',
                                  '--width=1000', '--height=700'))
    assert 'note:' not in result.stdout and 'skipped' not in result.stdout, result.stdout
    pixels = {}
    for page in PAGES:
        path = out / f'tb_{page}.png'
        assert f'{path}: ' in result.stdout
        assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
        with Image.open(path) as image:
            pixels[page] = np.asarray(image.convert('RGB'))
        assert pixels[page].shape == (700, 1000, 3)
        # Not blank: text, charts and images draw hundreds of colours; an empty page a handful.
        assert len(np.unique(pixels[page].reshape(-1, 3), axis=0)) > 100, page
    for a, b in itertools.combinations(PAGES, 2):
        assert not np.array_equal(pixels[a], pixels[b]), (a, b)
    assert sorted(os.listdir(out)) == sorted(f'tb_{page}.png' for page in PAGES)

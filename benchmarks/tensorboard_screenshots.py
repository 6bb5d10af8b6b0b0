#!/usr/bin/env python3
"""Screenshots of a logdir's TensorBoard dashboards, for the README (docs/tensorboard_*.png).

    python benchmarks/tensorboard_screenshots.py --logdir=/tmp/shots --out=docs

Starts `tensorboard` on a free local port, waits until its HTTP API lists the runs, and saves
what headless Chromium (`apt-get install chromium`) draws of each dashboard as OUT/PREFIX{page}.png:
  scalars     accuracy_test, accuracy_valid and two collapse monitors of every run
  images      eval/* and inputs/* of the first run that has them (one run: TensorBoard's image
              cards are narrow, a screen holds one run's)
  hparams     the HParams table: one row per run, with accuracy_test and accuracy_valid
  histograms  collapse/guessed_classes of every run
A page whose data no run has is skipped (said on its line). Training runs without hparams/ or
without image summaries are named on one line. Needs PIL (in requirements.txt).
"""
import argparse
import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

BROWSERS = ('chromium', 'chromium-browser', 'google-chrome')
EVENTS = 'events.out.tfevents.*'
SCALARS = r'^(accuracy_(test|valid)|collapse/(largest_class_share|guess_entropy))$'
NAMED = 3        # runs named in the line about what runs lack
BUDGET_MS = 15000  # Chromium's virtual time for a page: enough for TensorBoard 2.21's dashboards
# page: its URL hash parameters and zoom. The legacy dashboards, not "Time Series": they take a tag
# filter from the URL and draw within the virtual time budget (Time Series cards stayed empty).
# Smoothing 0: a short run has a few points, which smoothing bends. No run filter on scalars: a
# chart fits its y-range once, to its first load, and a run filter read from the URL changes the
# runs after that, leaving their lines outside the range. HParams zoomed out: its table's columns
# have a fixed width, and at 1400 pixels the metric columns, after five hyper-parameters, are cut.
PAGES = {'scalars': ({'_smoothingWeight': '0', 'tagFilter': SCALARS}, 1.0),
         'images': ({'tagFilter': '^(eval|inputs)/'}, 1.0),
         'hparams': ({}, 0.75),
         'histograms': ({'tagFilter': '^collapse/guessed_classes$'}, 1.0)}


def fail(message):
    print(f'{os.path.basename(sys.argv[0])}: error: {message}', file=sys.stderr)
    sys.exit(2)


def event_runs(logdir):
    """TensorBoard's run names: folders holding event files, relative to logdir ('.' for it)."""
    pattern = os.path.join(glob.escape(logdir), '**', EVENTS)
    folders = {os.path.dirname(p) for p in glob.glob(pattern, recursive=True)}
    return sorted(os.path.relpath(f, logdir).replace(os.sep, '/') for f in folders)


def get_json(port, path):
    with urllib.request.urlopen(f'http://127.0.0.1:{port}{path}', timeout=10) as reply:
        return json.load(reply)


def wait_for_runs(server, port, runs, timeout, log):
    """{plugin: {run: tags}} once TensorBoard lists every run and has the scalars of every
    training run (RUN/tf): a page taken earlier lacks data."""
    needed = {r for r in runs if os.path.basename(r) == 'tf'} or set(runs)
    deadline, missing = time.monotonic() + timeout, runs
    while time.monotonic() < deadline:
        if server.poll() is not None:
            fail(f'tensorboard exited with status {server.returncode}: {last_line(log)}')
        with contextlib.suppress(OSError, ValueError):  # not listening yet
            scalars = get_json(port, '/data/plugin/scalars/tags')
            missing = sorted((set(runs) - set(get_json(port, '/data/runs'))) |
                             (needed - set(scalars)))
            if not missing:
                return {'scalars': scalars, 'images': get_json(port, '/data/plugin/images/tags'),
                        'histograms': get_json(port, '/data/plugin/histograms/tags')}
        time.sleep(1)
    fail(f'--timeout={timeout}: TensorBoard has not loaded {len(missing)} run(s), e.g. '
         f'{missing[0]}; give a longer --timeout (its last line: {last_line(log)})')


def last_line(path):
    with open(path, errors='replace') as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1] if lines else '(nothing)'


def note_lacking(runs, tags):
    """One line: the training runs (folders with tf/) without hparams/, without image summaries."""
    trained = [r for r in runs if os.path.basename(r) == 'tf']
    no_images = ('no image summaries (no eval/confusion_matrix: trained with '
                 '--noimage_summaries or an older version)')
    lacking = [('no hparams/ (written by an older version; resuming such a run adds them)',
                [r for r in trained if re.sub('tf$', 'hparams', r) not in runs]),
               (no_images,
                [r for r in trained if 'eval/confusion_matrix' not in tags['images'].get(r, {})])]
    parts = [f'{len(names)} of {len(trained)} runs have {what}: ' +
             ', '.join(os.path.dirname(r) or '.' for r in names[:NAMED]) +
             (', ...' if len(names) > NAMED else '') for what, names in lacking if names]
    if parts:
        print('note: ' + '; '.join(parts))


def page_params(page, runs, tags):
    """The page's URL hash parameters, or None when no run has its data."""
    params, _ = PAGES[page]
    if page == 'images':
        images = tags['images']
        shown = ([r for r in sorted(images) if 'eval/confusion_matrix' in images[r]] or
                 [r for r in sorted(images) if images[r]])
        return dict(params, regexInput=f'^{re.escape(shown[0])}$') if shown else None
    if page == 'hparams' and not any(os.path.basename(r) == 'hparams' for r in runs):
        return None
    if page == 'histograms' and not any('collapse/guessed_classes' in ts
                                        for ts in tags['histograms'].values()):
        return None
    return params


def screenshot(browser, url, path, args, zoom, profile):
    """Draws `url` into the PNG `path` (a temporary name, then renamed), width x height pixels;
    a zoom below 1 fits more of the page into them."""
    tmp = os.path.join(os.path.dirname(path) or '.', f'.{os.path.basename(path)}.tmp.png')
    command = [browser, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
               f'--user-data-dir={profile}',  # fresh: no settings kept from an earlier session
               f'--force-device-scale-factor={zoom}',
               f'--window-size={round(args.width / zoom)},{round(args.height / zoom)}',
               # Virtual time runs the app's timers and requests to the end without waiting in
               # real time: the single-page app has fetched and drawn its data when it is taken.
               f'--virtual-time-budget={BUDGET_MS}', f'--screenshot={tmp}', url]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout,
                                check=False)  # its status is read below
        if result.returncode or not os.path.exists(tmp):
            said = [line for line in result.stderr.splitlines() if line.strip()] or ['nothing']
            fail(f'{browser} could not take {url} (status {result.returncode}): {said[-1]}')
        check_not_blank(tmp, url)
        os.replace(tmp, path)
    except subprocess.TimeoutExpired:
        fail(f'--timeout={args.timeout}: {browser} took longer on {url}; give a longer --timeout')
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def check_not_blank(path, url):
    """A page that drew nothing is one colour, or one colour below TensorBoard's top bar."""
    from PIL import Image
    with Image.open(path) as image:
        rgb = image.convert('RGB')
    below_bar = rgb.crop((0, rgb.height // 8, rgb.width, rgb.height))
    if rgb.getcolors(1) or below_bar.getcolors(1):  # a list only when there is one colour
        fail(f'{url} came out blank in {path}: TensorBoard drew no data; open it in a browser')


@contextlib.contextmanager
def tensorboard(command, logdir, log):
    """A TensorBoard server on a free port, in its own process group (with its data server)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    with open(log, 'w') as out:
        server = subprocess.Popen([command, '--logdir', logdir, '--host', '127.0.0.1', '--port',
                                   str(port)], stdout=out, stderr=out, start_new_session=True)
    try:
        yield server, port
    finally:  # SIGTERM; SIGKILL if it has not ended 10 s later
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(10)
                break


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--logdir', required=True, help='folder of runs: a --train_dir, or a '
                   'DATASET folder in it')
    p.add_argument('--out', default='docs', help='folder of the PNGs')
    p.add_argument('--prefix', default='tensorboard_', help='PNG names: PREFIX{page}.png')
    p.add_argument('--width', type=int, default=1400, help='window width, pixels')
    p.add_argument('--height', type=int, default=900, help='window height, pixels')
    p.add_argument('--timeout', type=int, default=180, help='seconds for TensorBoard to load '
                   'the runs, and for each screenshot')
    args = p.parse_args(argv)
    if min(args.width, args.height) < 200 or args.timeout < 1:
        fail(f'--width={args.width} --height={args.height} --timeout={args.timeout}: give at '
             'least 200 pixels and 1 second')
    return args


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isdir(args.logdir):
        fail(f'--logdir={args.logdir}: no such folder; give the --train_dir of your runs')
    runs = event_runs(args.logdir)
    if not runs:
        fail(f'--logdir={args.logdir}: no event files ({EVENTS}) there; give the --train_dir '
             'of runs that have started')
    browser = next(filter(None, map(shutil.which, BROWSERS)), None)
    if browser is None:
        fail(f'no Chromium on PATH (looked for {", ".join(BROWSERS)}): apt-get install chromium')
    command = shutil.which('tensorboard')
    if command is None:
        fail('no tensorboard command on PATH: activate the virtualenv (. .venv/bin/activate)')
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        log = os.path.join(scratch, 'tensorboard.log')
        with tensorboard(command, os.path.abspath(args.logdir), log) as (server, port):
            tags = wait_for_runs(server, port, runs, args.timeout, log)
            note_lacking(runs, tags)
            for page, (_, zoom) in PAGES.items():
                path = os.path.join(args.out, f'{args.prefix}{page}.png')
                params = page_params(page, runs, tags)
                if params is None:
                    print(f'{path}: skipped, no run has {page} data')
                    continue
                url = f'http://127.0.0.1:{port}/#{page}' + ''.join(
                    f'&{k}={urllib.parse.quote(v, safe="")}' for k, v in params.items())
                screenshot(browser, url, path, args, zoom, os.path.join(scratch, page))
                print(f'{path}: {os.path.getsize(path):,} bytes')


if __name__ == '__main__':
    main()

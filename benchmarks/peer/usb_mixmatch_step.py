#!/usr/bin/env python3
"""Times one MixMatch training step of USB (the `semilearn` package, 0.3.2) on the CPU.

Runs in the peer virtualenv (PyTorch + semilearn; see benchmarks/README.md, "The USB peer"),
never in the project's: benchmarks/bench_train.py starts it with --peer_python and reads the
one line it prints,

  RESULT {"median_s": ..., "times_s": [...], "cpu_util": [...], "hw": 32, ...}

(the prefix lets the caller find the line among anything semilearn itself prints).

What is timed is USB's own code, built through semilearn's public API (`get_config`,
`get_net_builder`, `get_algorithm`) as its `Trainer` builds it: `MixMatch.train_step` (label
guess on the 2 unlabeled views with frozen batch-norm statistics, a forward of the labeled
batch, MixUp of all 3*B images, forwards of the 3 mixed batches with statistics kept from the
first only, cross-entropy + weighted squared error), then the two hooks that USB's training loop
runs after every step to change weights: `ParamUpdateHook` (backward, SGD with Nesterov
momentum, cosine learning-rate step, zero_grad) and `EMAHook` (the EMA model's update). The
other hooks (evaluation, checkpoints, logging, the CUDA-event timer) and the data loaders are
left out, as our bench's bare step leaves out the trainer's. Inputs are fixed synthetic tensors:
B labeled images with labels and B unlabeled images in 2 views, `hw` x `hw` x 3, 10 classes;
the network is USB's `wrn_28_2`.

  /work/peer_venv/bin/python benchmarks/peer/usb_mixmatch_step.py --hw 32 --steps 10
"""
import argparse
import functools
import importlib.abc
import importlib.machinery
import json
import os
import statistics
import sys
import time
import types

# `import semilearn` runs its package __init__, which imports every dataset, network and logger
# it supports: torchvision, torchaudio, transformers, timm, wandb, aim, scikit-image, progress
# and torch.utils.tensorboard (which needs the tensorboard package). The MixMatch step on
# `wrn_28_2` calls none of them, and they cannot all be installed here: PyPI's torchvision fails
# to load beside the CPU build of torch that this machine provides ("operator torchvision::nms
# does not exist"). Those names are therefore answered by empty placeholder modules. A
# placeholder only has to survive import time (semilearn subclasses
# torchvision.datasets.ImageFolder at module level and reads constants of its classes); if timed
# code ever used one, the call would fail loudly rather than run something else. The result
# lists the placeholders that were imported.
UNUSED_IMPORTS = ('torchvision', 'torchaudio', 'transformers', 'timm', 'wandb', 'aim', 'skimage',
                  'progress', 'torch.utils.tensorboard')


@functools.lru_cache(maxsize=None)
def placeholder(owner, attr):
    """The stand-in for attribute `attr` of placeholder module or class `owner` (a dotted name).

    A class (so semilearn can subclass it), instantiable with any arguments, whose own
    attributes are placeholders too (semilearn keys a dict by InterpolationMode.NEAREST, ...);
    cached, so the same name gives the same object each time. Dunder names are never invented:
    Python's own machinery probes for some (`__file__`, `__wrapped__`) and must see them missing.
    """
    if attr[:2] == '__':
        raise AttributeError(f'{owner} (a placeholder) has no {attr}')
    return _PlaceholderClass(attr, (), {
        '__init__': lambda self, *args, **kwargs: None, '__module__': owner,
        '__doc__': f'placeholder for {owner}.{attr}'})


class _PlaceholderClass(type):
    def __getattr__(cls, attr):
        return placeholder(f'{cls.__module__}.{cls.__name__}', attr)


class PlaceholderImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports each of `names`, and anything below it, as an empty placeholder package; `used`
    collects the entries of `names` that were imported."""

    def __init__(self, names):
        self.names = tuple(names)
        self.used = set()

    def _entry(self, fullname):
        """The entry of `names` that `fullname` is or lies below (a.b covers a.b.c), or None."""
        return next((n for n in self.names if (fullname + '.').startswith(n + '.')), None)

    def find_spec(self, fullname, path=None, target=None):
        if self._entry(fullname) is None:
            return None  # not ours: the normal importers look for it
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []  # a package, so that its submodules are imported through us too
        module.__getattr__ = functools.partial(placeholder, spec.name)  # PEP 562
        return module

    def exec_module(self, module):
        self.used.add(self._entry(module.__name__))


def build_usb_mixmatch(hw, batch, mixup_alpha, T, threads):
    """USB's MixMatch algorithm object (model, EMA model, optimizer, scheduler, hooks)."""
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from semilearn import get_algorithm, get_config, get_net_builder

    config = {
        'algorithm': 'mixmatch', 'net': 'wrn_28_2', 'net_from_name': False,
        'num_classes': 10, 'img_size': hw, 'batch_size': batch, 'uratio': 1,
        # USB's classic-CV MixMatch settings (SGD lr 0.03, Nesterov momentum 0.9, decay 5e-4,
        # unlabeled weight 100 ramped over 40% of training, EMA 0.999, T 0.5), except MixUp's
        # alpha: 0.75 as RealMix's --beta (USB's configs use 0.5; the compute is the same).
        'optim': 'SGD', 'lr': 0.03, 'momentum': 0.9, 'weight_decay': 5e-4, 'layer_decay': 1.0,
        'ulb_loss_ratio': 100, 'unsup_warm_up': 0.4, 'ema_m': 0.999, 'T': T,
        'mixup_alpha': mixup_alpha, 'amp': False, 'clip_grad': 0.0, 'use_cat': True,
        # A long schedule, so the cosine learning rate and the ramp stay in their early range.
        'epoch': 1, 'num_train_iter': 1 << 20, 'num_warmup_iter': 0,
        'num_eval_iter': 1 << 30, 'num_log_iter': 1 << 30,
        # A dataset name that semilearn does not know: it then builds no datasets and no data
        # loaders (the inputs here are synthetic tensors).
        'dataset': 'synthetic', 'data_dir': os.devnull,
        'gpu': None, 'distributed': False, 'world_size': 1, 'rank': 0,
        'multiprocessing_distributed': False, 'resume': False, 'seed': 0,
        'save_dir': os.devnull, 'save_name': 'unused',
        'use_tensorboard': False, 'use_wandb': False, 'use_aim': False,
    }
    args = get_config(config)
    algorithm = get_algorithm(args, get_net_builder(args.net, args.net_from_name),
                              tb_log=None, logger=None)
    algorithm.model.train()
    algorithm.ema_model.train()
    # What AlgorithmBase.train() does before its loop that the timed step depends on: the EMA
    # hook creates the weight average there.
    algorithm.call_hook('before_run', 'EMAHook')
    return algorithm


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--hw', type=int, default=32, help='image height and width (32 or 8)')
    parser.add_argument('--batch', type=int, default=64, help='labeled (= unlabeled) batch')
    parser.add_argument('--warmup', type=int, default=3, help='untimed steps first')
    parser.add_argument('--steps', type=int, default=10, help='timed steps')
    parser.add_argument('--threads', type=int, default=2, help='torch compute threads')
    parser.add_argument('--mixup_alpha', type=float, default=0.75, help='MixUp Beta parameter')
    parser.add_argument('--T', type=float, default=0.5, help='sharpening temperature')
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error('--steps must be >= 1 and --warmup >= 0')

    importer = PlaceholderImporter(UNUSED_IMPORTS)
    sys.meta_path.insert(0, importer)
    import torch
    import semilearn
    from importlib.metadata import version

    algorithm = build_usb_mixmatch(args.hw, args.batch, args.mixup_alpha, args.T, args.threads)
    generator = torch.Generator().manual_seed(1)
    shape = (args.batch, 3, args.hw, args.hw)  # torch's NCHW, USB's default layout
    x_lb = torch.rand(shape, generator=generator)
    y_lb = torch.randint(0, 10, (args.batch,), generator=generator)
    x_ulb_w = torch.rand(shape, generator=generator)
    x_ulb_s = torch.rand(shape, generator=generator)

    def step():
        """One iteration of USB's loop body, minus the data loader and the bookkeeping hooks."""
        algorithm.out_dict, algorithm.log_dict = algorithm.train_step(x_lb, y_lb, x_ulb_w, x_ulb_s)
        algorithm.call_hook('after_train_step', 'ParamUpdateHook')
        algorithm.call_hook('after_train_step', 'EMAHook')
        algorithm.it += 1
        return algorithm.log_dict['train/total_loss']  # a Python float: the step has finished

    for _ in range(args.warmup):  # the first steps allocate and tune; they are not timed
        step()
    times, util, losses = [], [], []
    for _ in range(args.steps):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        losses.append(step())
        elapsed = time.perf_counter() - start_wall
        times.append(elapsed)
        util.append((time.process_time() - start_cpu) / elapsed)

    median = statistics.median(times)
    result = {
        'what': 'USB MixMatch train_step + ParamUpdateHook + EMAHook',
        'semilearn': version('semilearn'), 'semilearn_path': os.path.dirname(semilearn.__file__),
        'torch': torch.__version__, 'threads': torch.get_num_threads(),
        'hw': args.hw, 'batch': args.batch, 'unlabeled_views': 2, 'mixup_alpha': args.mixup_alpha,
        'trained_images_per_step': 3 * args.batch,
        'params': sum(p.numel() for p in algorithm.model.parameters()),
        'warmup': args.warmup, 'steps': args.steps,
        'median_s': round(median, 4), 'min_s': round(min(times), 4), 'max_s': round(max(times), 4),
        'img_per_s': round(3 * args.batch / median, 2),
        'times_s': [round(t, 4) for t in times],
        # process CPU seconds / wall seconds per step: 2.0 = two cores busy with this step
        'cpu_util': [round(u, 2) for u in util],
        'loss_first_last_timed': [round(losses[0], 4), round(losses[-1], 4)],
        'placeholders': sorted(importer.used),
        'loadavg': [round(x, 2) for x in os.getloadavg()],
    }
    print('RESULT ' + json.dumps(result), flush=True)


if __name__ == '__main__':
    main()

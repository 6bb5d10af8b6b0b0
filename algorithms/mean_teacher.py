#!/usr/bin/env python3
"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017, arXiv 1703.01780): the Pi-Model whose targets
come from the exponential moving average of the weights (the teacher), not from the trained
model (the student).

One step (docs/algorithm.md, "Mean Teacher"): as pi_model.py, with the trainer's EMA model
(decay --ema) predicting the first view:
  loss = xe + wu * ramp * mean_u mean_K (softmax teacher(u1) - softmax student(u2))^2,
  ramp = min(progress / warmup_pos, 1).
Settings of the MixMatch paper's comparison, which the RealMix paper's Table 1 reports.

  python algorithms/mean_teacher.py --dataset=cifar10.3@250-5000 --augment=cifar10
"""
import dataclasses

import libml  # noqa: F401  (first: sets TensorFlow's environment before TensorFlow is imported)

from libml import train
from libml.options import option

import pi_model  # beside this file (a script's folder is the first entry of sys.path)


@dataclasses.dataclass
class Hyper(pi_model.Hyper):
    """Mean Teacher's hyper-parameters: Pi-Model's, a heavier consistency weight. The teacher's
    decay is the trainer's --ema."""
    wu: float = option(50.0, 'Weight of the consistency loss.')


class MeanTeacher(pi_model.PiModel):
    name = 'MeanTeacher'
    tag = 'losses/mt'

    def __init__(self, nclass, hyper=None, **changes):
        super().__init__(nclass, hyper or Hyper(), **changes)

    def teacher(self, step):
        """The EMA model (the evaluated weights); its weights get no gradient."""
        return step.ema_model


if __name__ == '__main__':
    train.main(MeanTeacher, Hyper)

"""Timing compiled calls: a loop of calls after warm-up, and variants side by side.

``measure`` times each variant of a benchmark line (JAX under each weight-gradient
mode, PyTorch) either one after the other over ``steps`` calls, or round-robin over
``rounds`` rounds so that a shared machine's drifting load slows them all alike.
"""

from collections.abc import Callable, Iterator
import os
import time
from typing import Any, NamedTuple

import jax
import numpy as np


class Loop(NamedTuple):
  """A call to time, ``carry = step(carry)``, and how the host waits for a carry."""
  step: Callable[[Any], Any]
  carry: Any
  sync: Callable[[Any], Any] = jax.block_until_ready


# A variant ready to time: its loop, and what turns seconds per call into result fields.
Prepared = tuple[Loop, Callable[[float], dict[str, Any]]]
TORCH = 'torch'  # The name of the PyTorch variant of a line.


def run_calls(loop: Loop, calls: int) -> tuple[float, Loop]:
  """Seconds of ``calls`` calls with one sync at the end, and the loop with the new carry."""
  carry = loop.carry
  start = time.perf_counter()
  for _ in range(calls):
    carry = loop.step(carry)
  loop.sync(carry)
  return time.perf_counter() - start, loop._replace(carry=carry)


def time_loop(loop: Loop, steps: int, warmup: int) -> float:
  """Seconds per call of ``carry = step(carry)`` after ``warmup`` calls.

  The host waits (``sync``) only before and after the timed calls, so device work
  queues up as it does in the training loop.
  """
  _, loop = run_calls(loop, warmup)
  seconds, _ = run_calls(loop, steps)
  return seconds / steps


def round_robin(loops: dict[str, Loop], rounds: int,
                warmup: int) -> tuple[dict[str, list[float]], list[float]]:
  """Seconds of each call of each loop, one call of each per round, after their warm-up.

  The order is reversed every other round, so that no loop always runs right after
  the same other one. Returns the seconds by loop and the 1-minute load average after
  each round.
  """
  loops = {name: run_calls(loop, warmup)[1] for name, loop in loops.items()}
  seconds = {name: [] for name in loops}
  loads = []
  names = list(loops)
  for index in range(rounds):
    for name in reversed(names) if index % 2 else names:
      elapsed, loops[name] = run_calls(loops[name], 1)
      seconds[name].append(elapsed)
    loads.append(os.getloadavg()[0])
  return seconds, loads


def measure(variants: dict[str, Callable[[], Prepared]], *, steps: int, warmup: int,
            rounds: int) -> Iterator[tuple[str, dict[str, Any]]]:
  """Prepares and times the variants of a line; yields (name, result fields) in order.

  ``rounds=0``: one after the other, each timed over ``steps`` calls right after its
  preparation and yielded as soon as timed. Otherwise all are prepared first, then
  timed by round_robin: the fields are those of the median call, with the fastest
  and slowest call (``ms_min``, ``ms_max``) and the load range (``load_1min``).
  """
  if not rounds:
    for name, prepare in variants.items():
      loop, fields = prepare()
      yield name, fields(time_loop(loop, steps, warmup))
    return
  prepared = {name: prepare() for name, prepare in variants.items()}
  seconds, loads = round_robin({name: loop for name, (loop, _) in prepared.items()},
                               rounds, warmup)
  for name, (_, fields) in prepared.items():
    yield name, {**fields(float(np.median(seconds[name]))),
                 'ms_min': min(seconds[name]) * 1e3, 'ms_max': max(seconds[name]) * 1e3,
                 'load_1min': [min(loads), max(loads)]}


def rates(seconds: float, images: int, flops: float | None, peak: float | None,
          num_devices: int = 1) -> dict[str, Any]:
  """Timing fields of a result line; ``flops`` are per device."""
  tflops = flops / seconds / 1e12 if flops else None
  return {'ms_per_step': seconds * 1e3, 'images_per_s': images / seconds,
          'flops_per_step': flops * num_devices if flops else None,
          'tflops_per_s_per_device': tflops,
          'mfu': tflops / peak if tflops and peak else None}

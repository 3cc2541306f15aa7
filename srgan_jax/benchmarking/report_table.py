"""The benchmark's report as a table: one row per result, the columns of the run.

The rows are ``workloads.run_benchmarks``'s results; the command prints them
(``srgan_jax/benchmark.py``).
"""

from typing import Any

_COLUMNS = (('benchmark', 'benchmark', '{}'), ('dW', 'weight_gradient', '{}'),
            ('batch', 'batch_size', '{}'), ('k', 'steps_per_call', '{}'),
            ('HR side', 'hr_size', '{}'), ('ms/step', 'ms_per_step', '{:.1f}'),
            ('ms min', 'ms_min', '{:.1f}'), ('ms max', 'ms_max', '{:.1f}'),
            ('images/s', 'images_per_s', '{:.2f}'), ('MP/s', 'megapixels_per_s', '{:.2f}'),
            ('TFLOP/s/dev', 'tflops_per_s_per_device', '{:.3f}'), ('MFU', 'mfu', '{:.1%}'),
            ('torch ms', ('torch', 'ms_per_step'), '{:.1f}'),
            ('torch min', ('torch', 'ms_min'), '{:.1f}'),
            ('torch max', ('torch', 'ms_max'), '{:.1f}'),
            ('torch img/s', ('torch', 'images_per_s'), '{:.2f}'),
            ('JAX/torch', 'jax_over_torch', '{:.2f}'),
            ('load', 'load_1min', '{0[0]:.2f}-{0[1]:.2f}'))
# Shown only for runs with rounds.
_ROUND_COLUMNS = frozenset({'ms min', 'ms max', 'torch min', 'torch max', 'load'})


def _columns(rounds: bool) -> list[tuple[str, Any, str]]:
  """The table's columns: those of the round statistics only for runs with rounds."""
  return [column for column in _COLUMNS if rounds or column[0] not in _ROUND_COLUMNS]


def format_row(row: dict[str, Any], rounds: bool = False) -> str:
  """One result line of the table ('-' for what was not measured)."""
  cells = []
  for _, key, fmt in _columns(rounds):
    value = row.get(key[0], {}).get(key[1]) if isinstance(key, tuple) else row.get(key)
    cells.append('-' if value is None else fmt.format(value))
  return ' | '.join(cells)


def format_table(report: dict[str, Any]) -> str:
  """The report as a Markdown table, with the environment and notes above it."""
  environment = ', '.join(f'{k}={v}' for k, v in report['environment'].items() if v)
  rounds = bool(report['environment'].get('rounds'))
  columns = _columns(rounds)
  lines = [environment, *report['notes'],
           ' | '.join(title for title, _, _ in columns),
           ' | '.join('---' for _ in columns)]
  lines += [format_row(row, rounds) for row in report['results']]
  return '\n'.join(lines)

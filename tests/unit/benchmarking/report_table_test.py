"""report_table.py: one row per result, '-' where nothing was measured, the round
statistics' columns only for runs with rounds."""

from srgan_jax.benchmarking import report_table

ROW = {'benchmark': 'srresnet_step', 'weight_gradient': 'auto', 'batch_size': 16,
       'steps_per_call': 1, 'hr_size': 96, 'ms_per_step': 1875.04, 'images_per_s': 8.533,
       'torch': {'ms_per_step': 1200.0, 'images_per_s': 13.333}, 'jax_over_torch': 0.64}


def test_row_formats_values_and_marks_what_was_not_measured():
  assert report_table.format_row(ROW) == (
      'srresnet_step | auto | 16 | 1 | 96 | 1875.0 | 8.53 | - | - | - | 1200.0 | 13.33 | 0.64')


def test_table_shows_round_columns_only_with_rounds():
  report = {'environment': {'jax': '0.10.2', 'rounds': 0}, 'notes': ['a note'],
            'results': [ROW]}
  environment, note, header, rule, row = report_table.format_table(report).splitlines()
  assert environment == 'jax=0.10.2' and note == 'a note'
  assert 'ms min' not in header and rule.count('---') == len(header.split(' | '))
  assert row == report_table.format_row(ROW)
  with_rounds = report_table.format_table(
      {**report, 'environment': {'rounds': 3}, 'results': [{**ROW, 'load_1min': (1.5, 2.25)}]})
  header, row = with_rounds.splitlines()[2], with_rounds.splitlines()[-1]
  assert 'ms min' in header and header.endswith('| load') and row.endswith('| 1.50-2.25')

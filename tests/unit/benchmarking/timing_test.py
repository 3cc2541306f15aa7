"""timing.py: variants timed one after the other, or side by side in rounds."""

from srgan_jax.benchmarking import timing


def _fake_variant(name, events):
  """A variant whose preparation and calls only record themselves (and the carry)."""
  def prepare():
    events.append(('prepare', name))
    loop = timing.Loop(lambda carry: events.append((name, carry)) or carry + 1, 0,
                       lambda _: None)
    return loop, lambda seconds: {'ms_per_step': seconds * 1e3}
  return prepare


def test_sequential_timing_prepares_each_variant_before_timing_it():
  events = []
  variants = {name: _fake_variant(name, events) for name in 'ab'}
  timed = list(timing.measure(variants, steps=2, warmup=1, rounds=0))
  assert [name for name, _ in timed] == ['a', 'b']
  assert events == [('prepare', 'a'), ('a', 0), ('a', 1), ('a', 2),
                    ('prepare', 'b'), ('b', 0), ('b', 1), ('b', 2)]
  assert all('ms_min' not in fields for _, fields in timed)


def test_rounds_call_each_variant_once_per_round_in_alternating_order():
  events = []
  variants = {name: _fake_variant(name, events) for name in 'abc'}
  timed = dict(timing.measure(variants, steps=5, warmup=1, rounds=3))
  prepared, calls = events[:3], events[3:]
  assert prepared == [('prepare', name) for name in 'abc']
  # The warm-up call of each, then the rounds; each variant's carry goes on.
  assert calls == [('a', 0), ('b', 0), ('c', 0), ('a', 1), ('b', 1), ('c', 1),
                   ('c', 2), ('b', 2), ('a', 2), ('a', 3), ('b', 3), ('c', 3)]
  for fields in timed.values():
    assert 0 <= fields['ms_min'] <= fields['ms_per_step'] <= fields['ms_max']
    assert fields['load_1min'][0] <= fields['load_1min'][1]

"""The package's modules import each other without a cycle.

The graph is read from the source with ``ast``: every ``import`` and ``from ...
import`` of a srgan_jax module counts, at module level or inside a function (a
function-level import only hides a cycle until the function runs).
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'srgan_jax'


def module_names(package: pathlib.Path) -> dict[str, pathlib.Path]:
  """Dotted name -> file, for every module of the package (``__init__`` as the package)."""
  names = {}
  for path in sorted(package.rglob('*.py')):
    parts = path.relative_to(package.parent).with_suffix('').parts
    if parts[-1] == '__init__':
      parts = parts[:-1]
    names['.'.join(parts)] = path
  return names


def imported_modules(tree: ast.AST, module: str, is_package: bool,
                     known: set[str]) -> set[str]:
  """The package's modules that one module's source imports, anywhere in it."""
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:  # Relative: counted from the importing module's package.
        anchor = module.split('.')[:len(module.split('.')) - node.level + is_package]
        base = '.'.join(anchor + ([base] if base else []))
      # `from a import b` imports module a.b if there is one, else a name of a.
      targets = [f'{base}.{alias.name}' if f'{base}.{alias.name}' in known else base
                 for alias in node.names]
    else:
      continue
    for target in targets:
      while target and target not in known:  # `import a.b.c` of a name: its module.
        target = target.rpartition('.')[0]
      if target and target != module:
        found.add(target)
  return found


def import_graph(package: pathlib.Path = PACKAGE) -> dict[str, set[str]]:
  """Module -> the package's modules it imports."""
  names = module_names(package)
  return {name: imported_modules(ast.parse(path.read_text(), str(path)), name,
                                 path.name == '__init__.py', set(names))
          for name, path in names.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of the graph as [a, b, ..., a], or None if it has none (depth-first)."""
  done, path = set(), []
  on_path = {}

  def visit(node):
    on_path[node] = len(path)
    path.append(node)
    for successor in sorted(graph.get(node, ())):
      if successor in on_path:
        return path[on_path[successor]:] + [successor]
      if successor not in done:
        cycle = visit(successor)
        if cycle:
          return cycle
    path.pop()
    del on_path[node]
    done.add(node)
    return None

  for node in sorted(graph):
    if node not in done:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def test_the_package_has_no_import_cycle():
  cycle = find_cycle(import_graph())
  assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


def test_the_graph_sees_every_kind_of_import():
  """Module-level, function-level, `from srgan_jax.configs import` and `import a.b`."""
  graph = import_graph()
  assert {'srgan_jax.configs.default', 'srgan_jax.paths'} <= graph['srgan_jax.configs.x4']
  assert 'srgan_jax.models' in graph['srgan_jax.train']  # Module level.
  assert 'srgan_jax.input_pipeline' in graph['srgan_jax.train']  # Inside a function.
  assert 'srgan_jax.vgg19' in graph['srgan_jax.configs.validation']  # Inside a function.
  assert 'srgan_jax.configs' in graph['srgan_jax.main']  # The package itself.


def test_imports_inside_functions_and_relative_ones_count(tmp_path):
  package = tmp_path / 'pkg'
  (package / 'sub').mkdir(parents=True)
  (package / '__init__.py').write_text('')
  (package / 'sub' / '__init__.py').write_text('from . import c\n')
  (package / 'a.py').write_text('def f():\n  from pkg import b\n')
  (package / 'b.py').write_text('import pkg.sub.c\nfrom pkg.sub import NAME\n')
  (package / 'sub' / 'c.py').write_text('from .. import a\n')
  graph = import_graph(package)
  assert graph == {'pkg': set(), 'pkg.a': {'pkg.b'}, 'pkg.b': {'pkg.sub.c', 'pkg.sub'},
                   'pkg.sub': {'pkg.sub.c'}, 'pkg.sub.c': {'pkg.a'}}
  assert find_cycle(graph) == ['pkg.a', 'pkg.b', 'pkg.sub', 'pkg.sub.c', 'pkg.a']


@pytest.mark.parametrize('graph, expected', [
    ({'a': {'b'}, 'b': {'c'}, 'c': set()}, None),
    ({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}, None),  # A diamond is no cycle.
    ({'a': {'b'}, 'b': {'c'}, 'c': {'b'}}, ['b', 'c', 'b']),
])
def test_find_cycle(graph, expected):
  assert find_cycle(graph) == expected

"""The package's layers: its modules import downwards only, and without a cycle.

The graph is read from the source with ``ast``: every ``import`` and ``from ...
import`` of a srgan_jax module counts, at module level or inside a function (a
function-level import only hides a cycle until the function runs).

    python tests/system/imports_test.py   # prints the graph, subpackage by subpackage
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / 'srgan_jax'

# Bottom to top: a module may import its own subpackage's modules and those of the
# layers below. The commands (srgan_jax/*.py) sit on top and import no command.
LAYERS = ('runtime', 'configs', 'imaging', 'nn', 'data', 'evaluation', 'training',
          'inference', 'benchmarking')
COMMANDS = 'commands'


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


def layer_of(module: str) -> str:
  """The layer of a dotted module name: its subpackage, or COMMANDS for a top module."""
  parts = module.split('.')
  if len(parts) == 1:  # The package's __init__.
    return LAYERS[0]
  return parts[1] if parts[1] in LAYERS else COMMANDS


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
  """'a -> b' for each import of a module from a layer above, or of a command."""
  rank = {layer: index for index, layer in enumerate(LAYERS + (COMMANDS,))}
  def upward(module, target):
    below_or_same = rank[layer_of(target)] <= rank[layer_of(module)]
    return not below_or_same or layer_of(target) == layer_of(module) == COMMANDS

  return [f'{module} -> {target}' for module, targets in sorted(graph.items())
          for target in sorted(targets) if upward(module, target)]


def format_graph(graph: dict[str, set[str]]) -> str:
  """The graph by layer, bottom first: each module and what it imports."""
  lines = []
  for layer in LAYERS + (COMMANDS,):
    lines.append(f'{layer}:')
    lines += [f'  {module} <- {", ".join(sorted(graph[module])) or "-"}'
              for module in sorted(graph) if layer_of(module) == layer]
  return '\n'.join(lines)


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


def test_imports_point_down_the_layers():
  upward = upward_imports(import_graph())
  assert not upward, 'imports from a higher layer or between commands:\n' + '\n'.join(upward)


def test_every_module_is_in_a_layer_and_commands_are_thin():
  """Each subpackage is a layer; each top-level module is a command with a main()."""
  graph = import_graph()
  subpackages = {path.name for path in PACKAGE.iterdir()
                 if (path / '__init__.py').exists() and path.name != 'pretrained_models'}
  assert subpackages == set(LAYERS)
  for module in graph:
    if layer_of(module) == COMMANDS:
      source = (PACKAGE / f'{module.split(".")[1]}.py').read_text()
      assert 'def main(' in source and "if __name__ == '__main__':" in source, module


def test_upward_imports_are_found():
  graph = {'srgan_jax.nn.models': {'srgan_jax.training.loop', 'srgan_jax.runtime.paths'},
           'srgan_jax.evaluate': {'srgan_jax.main', 'srgan_jax.evaluation.scoring'},
           'srgan_jax.data.sources': {'srgan_jax.configs.default'}}
  assert upward_imports(graph) == ['srgan_jax.evaluate -> srgan_jax.main',
                                   'srgan_jax.nn.models -> srgan_jax.training.loop']


def test_the_graph_sees_every_kind_of_import():
  """Module-level, function-level, `from srgan_jax.configs import` and `import a.b`."""
  graph = import_graph()
  assert {'srgan_jax.configs.default', 'srgan_jax.runtime.paths'} <= graph['srgan_jax.configs.x4']
  assert 'srgan_jax.nn.models' in graph['srgan_jax.training.steps']  # Module level.
  assert 'srgan_jax.data.tf_pipeline' in graph['srgan_jax.data.inputs']  # Inside a function.
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


if __name__ == '__main__':
  print(format_graph(import_graph()))

"""A generator written as a file that another runtime runs, verified against JAX.

The command is ``python -m srgan_jax.export --model=NAME|--workdir=W --format=F
--output=FILE`` (``srgan_jax/export.py``). Every format holds the same function:

    input   float32 [batch, height, width, 3], RGB in [0, 1] (any batch and size >= 2)
    output  float32 [batch, scale * height, scale * width, 3], RGB in [0, 1] (unclipped)

that is, the generator's output (in [-1, 1]) mapped to [0, 1]; the weights are
constants inside the file. Formats:

- ``stablehlo``: ``jax.export`` of the jitted function with symbolic batch, height and
  width (serialized ``jax.export.Exported``; run by ``jax.export.deserialize``). No
  package beyond JAX.
- ``onnx``: ``jax2onnx`` (the JAX program converted primitive by primitive, opset 23)
  with dynamic batch, height and width, run by ``onnxruntime``. Chosen over the path
  through ``jax2tf`` and ``tf2onnx``, which needs TensorFlow and a converter pinned
  to it (a 500 MB dependency for one conversion).
- ``litert``: ``jax2tf`` (the ``jax.export`` program inside a TF function, symbolic
  sizes as ``stablehlo``), converted to a ``.tflite`` flatbuffer of TFLite builtin
  ops by TensorFlow's ``TFLiteConverter`` (TensorFlow is already a dependency of the
  package's tf.data input, so only the runtime is extra); run by LiteRT
  (``ai_edge_litert``'s Interpreter, the successor of ``tf.lite.Interpreter``), any
  batch, height and width through ``resize_tensor_input``. Chosen over ai-edge-torch
  (the PyTorch twin converted), which needs torch and its own TensorFlow build
  pinned to it.
- ``torch``: ``torch.export`` (a ``.pt2`` archive: aten graph and weights) of the
  generator's PyTorch twin (``nn/torch_twin.py``, the benchmark's networks) with
  the Flax weights, dynamic batch, height and width (``torch.export.Dim``); run by
  ``torch.export.load(FILE).module()``, with torch alone: no module definition to
  ship or import, unlike safetensors weights, which would need the twin's code
  beside them. Same NHWC layout as the other formats.

Sizes stay symbolic through the bicubic skip and chroma options because
``bicubic.imresize_jax`` (and the twin's copy of its sums) upscales symbolic sizes
by fixed per-phase taps.

Verification (`verify`): the written file, loaded by its own runtime, super-resolves
two random inputs of odd sizes (`VERIFY_SIZES`); its output must equal JAX's within
the format's `TOLERANCES` (times the largest output magnitude, when above 1: random
weights make large outputs). A file that fails, or that its runtime cannot load, is
deleted and the command exits 2 naming the difference. The model card
(``FILE.json``, `model_card`) holds the config, scale, input range, the scores the
model was shipped with and the verification line.

The packages of every format come with ``pip install -e ".[export]"``; LiteRT's or
torch alone with ``.[litert]`` or ``.[torch]`` (no jax2onnx, hence no older Orbax).
Without them `ExportError` names the extra (`extra_hint`).
"""

import importlib
import io
import json
import logging
import os
import pathlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from srgan_jax.nn import torch_twin
from srgan_jax.runtime import errors
from srgan_jax.runtime import paths

FORMATS = ('stablehlo', 'onnx', 'litert', 'torch')
# Each format's file name suffix, as the README's snippets name the files
# (torch.export.load warns of a name that does not end in .pt2, and loads it).
SUFFIXES = {'stablehlo': '.stablehlo', 'onnx': '.onnx', 'litert': '.tflite', 'torch': '.pt2'}
# Largest |difference| from JAX, in output units ([0, 1]), per format: stablehlo is the
# same XLA program (float32 rounding of another fusion at most: 2.4e-7 measured on
# cpu_small_gan); onnxruntime, LiteRT (XNNPACK) and torch compute the convolutions by
# their own kernels, in another order (1.8e-6, 2.4e-6 and 2.3e-6 on cpu_small_gan).
# All far below half a grey level (2e-3).
TOLERANCES = {'stablehlo': 1e-5, 'onnx': 1e-4, 'litert': 1e-4, 'torch': 1e-4}
# (batch, height, width) of the two verification inputs: odd sizes, two batch sizes.
VERIFY_SIZES = ((2, 45, 67), (1, 96, 128))
# The packages each format needs (import name -> pip name), and the smallest of
# setup.py's extras that has them.
_PACKAGES = {'stablehlo': {}, 'onnx': {'jax2onnx': 'jax2onnx', 'onnxruntime': 'onnxruntime'},
             'litert': {'tensorflow': 'tensorflow-cpu', 'ai_edge_litert': 'ai-edge-litert'},
             'torch': {'torch': 'torch'}}
_EXTRAS = {'stablehlo': 'export', 'onnx': 'export', 'litert': 'litert', 'torch': 'torch'}
# What every format's file takes: any batch, height and width, the sides at least 2
# (the bicubic taps' mirrored borders, imaging/bicubic.py, slice 2 rows).
_SYMBOLIC_SHAPE = 'b, h, w, 3'
_CONSTRAINTS = ('h >= 2', 'w >= 2')


class ExportError(errors.UserError):
  """An export that could not be written or verified; the message says why."""


def unit_range_function(model: Any, variables: Any) -> Callable[[jax.Array], jax.Array]:
  """LR RGB in [0, 1] -> SR RGB in [0, 1] (unclipped), the weights as constants."""
  def upscale(lr: jax.Array) -> jax.Array:
    return (model.apply(variables, lr, train=False) + 1.0) * 0.5
  return upscale


def missing_packages(fmt: str) -> list[str]:
  """The pip names of the packages ``fmt`` needs that do not import here."""
  missing = []
  for module, package in _PACKAGES[fmt].items():
    try:
      importlib.import_module(module)
    except ImportError:
      missing.append(package)
  return missing


def extra_hint(fmt: str) -> str:
  """How to install ``fmt``'s packages, e.g. 'pip install -e ".[export]"'."""
  return f'pip install -e ".[{_EXTRAS[fmt]}]"'


def check_packages(fmt: str) -> None:
  """Raises ExportError naming the extra when ``fmt``'s packages are missing."""
  missing = missing_packages(fmt)
  if missing:
    raise ExportError(f'--format={fmt} needs {", ".join(missing)}: {extra_hint(fmt)}')


def symbolic_input() -> jax.ShapeDtypeStruct:
  """Any batch, height and width (each at least 2, for the bicubic taps' mirrored
  borders)."""
  shape = jax.export.symbolic_shape(_SYMBOLIC_SHAPE, constraints=_CONSTRAINTS)
  return jax.ShapeDtypeStruct(shape, jnp.float32)


def _write_stablehlo(model: Any, variables: Any, path: pathlib.Path) -> None:
  """``jax.export`` of the jitted function for `symbolic_input`."""
  function = unit_range_function(model, variables)
  path.write_bytes(jax.export.export(jax.jit(function))(symbolic_input()).serialize())


def _write_onnx(model: Any, variables: Any, path: pathlib.Path) -> None:
  """jax2onnx with dynamic batch, height and width (`symbolic_input`, whose
  constraints it keeps), one self-contained file."""
  import jax2onnx  # pylint: disable=g-import-not-at-top
  # It warns of shape helper values it leaves untyped; onnxruntime runs the file, and
  # `verify` checks what it computes.
  logging.getLogger('onnx_ir.serde').setLevel(logging.ERROR)
  onnx_model = jax2onnx.to_onnx(unit_range_function(model, variables), [symbolic_input()],
                                model_name='srgan_generator', input_names=['lr'],
                                output_names=['sr'])
  path.write_bytes(onnx_model.SerializeToString())


def _write_litert(model: Any, variables: Any, path: pathlib.Path) -> None:
  """jax2tf of the function for `symbolic_input`'s sizes, converted by TFLiteConverter
  to a .tflite whose input is [-1, -1, -1, 3]: builtin ops only (the converter's
  default: an op LiteRT lacks fails the export rather than needing TensorFlow ops)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  # Not in the TF-free core.
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  function = jax2tf.convert(unit_range_function(model, variables), with_gradient=False,
                            polymorphic_shapes=_SYMBOLIC_SHAPE,
                            polymorphic_constraints=_CONSTRAINTS)
  traced = tf.function(function, autograph=False,
                       input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [traced.get_concrete_function()], traced)
  path.write_bytes(converter.convert())


def _write_torch(model: Any, variables: Any, path: pathlib.Path) -> None:
  """``torch.export`` of the generator's PyTorch twin, wrapped to `unit_range_function`'s
  NHWC [0, 1] in and out, with dynamic batch, height and width (>= 2, as
  `symbolic_input`)."""
  import torch  # pylint: disable=g-import-not-at-top

  class UnitRange(torch.nn.Module):
    """NHWC RGB in [0, 1] -> NHWC RGB in [0, 1], as every format."""

    def __init__(self):
      super().__init__()
      self.generator = torch_twin.generator_module(model, variables)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
      # Contiguous NCHW: a permuted view has channels-last strides, which make
      # torch.export add guards on the sizes (width != 2) to choose a memory format.
      sr = self.generator(lr.permute(0, 3, 1, 2).contiguous())
      return ((sr + 1.0) * 0.5).permute(0, 2, 3, 1)

  dims = {0: torch.export.Dim('batch', min=1), 1: torch.export.Dim('height', min=2),
          2: torch.export.Dim('width', min=2)}
  # Traced at sizes no other than 0 and 1 (which torch.export would specialise).
  program = torch.export.export(UnitRange().eval(), (torch.zeros(2, 5, 7, 3),),
                                dynamic_shapes=(dims,))
  archive = io.BytesIO()  # torch.export.save wants a buffer or a name ending .pt2.
  torch.export.save(program, archive)
  path.write_bytes(archive.getvalue())


def _runner_stablehlo(path: pathlib.Path) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
  exported = jax.export.deserialize(bytearray(path.read_bytes()))
  return (lambda x: np.asarray(exported.call(x)),
          f'jax.export {jax.__version__} (StableHLO)')


def _runner_onnx(path: pathlib.Path) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
  import onnxruntime  # pylint: disable=g-import-not-at-top
  session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
  name = session.get_inputs()[0].name
  return (lambda x: session.run(None, {name: x})[0], f'onnxruntime {onnxruntime.__version__}')


def _runner_litert(path: pathlib.Path) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
  import ai_edge_litert  # pylint: disable=g-import-not-at-top
  from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  model = litert.Interpreter(model_content=path.read_bytes())
  [lr], [sr] = model.get_input_details(), model.get_output_details()

  def run(x: np.ndarray) -> np.ndarray:
    model.resize_tensor_input(lr['index'], x.shape)  # Its sizes are the input's.
    model.allocate_tensors()
    model.set_tensor(lr['index'], x)
    model.invoke()
    return model.get_tensor(sr['index'])

  return run, f'LiteRT {ai_edge_litert.__version__}'


def _runner_torch(path: pathlib.Path) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
  import torch  # pylint: disable=g-import-not-at-top
  module = torch.export.load(io.BytesIO(path.read_bytes())).module()

  def run(x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
      return module(torch.from_numpy(x)).numpy()

  return run, f'torch {torch.__version__} (torch.export)'


_WRITERS = {'stablehlo': _write_stablehlo, 'onnx': _write_onnx, 'litert': _write_litert,
            'torch': _write_torch}
_RUNNERS = {'stablehlo': _runner_stablehlo, 'onnx': _runner_onnx, 'litert': _runner_litert,
            'torch': _runner_torch}


def verification_inputs(sizes: Sequence[tuple[int, int, int]] = VERIFY_SIZES
                        ) -> list[np.ndarray]:
  """Inputs of ``sizes`` (batch, height, width): uniform random RGB in [0, 1], fixed seed."""
  rng = np.random.default_rng(0)
  return [rng.uniform(0, 1, (*size, 3)).astype(np.float32) for size in sizes]


def verify(path: str | os.PathLike[str], fmt: str,
           function: Callable[[jax.Array], jax.Array],
           sizes: Sequence[tuple[int, int, int]] = VERIFY_SIZES,
           label: str | None = None) -> str:
  """Runs the file in its runtime beside ``function`` (JAX) on `verification_inputs`
  of ``sizes`` (tests of paper-size generators take smaller ones); ``label``: the
  file's name in messages (default: ``path``).

  Returns:
    The verification line, e.g. 'verified in onnxruntime 1.32.0: max |difference|
    2e-06 on 67x45 and 128x96 inputs (tolerance 1e-04)'.

  Raises:
    ExportError: the runtime cannot load or run the file, or it differs beyond
      ``TOLERANCES[fmt]``.
  """
  try:
    run, runtime = _RUNNERS[fmt](pathlib.Path(path))
    pairs = [(np.asarray(run(x)), np.asarray(jax.jit(function)(x)))
             for x in verification_inputs(sizes)]
  except Exception as error:  # pylint: disable=broad-except  # Any load failure refuses.
    raise ExportError(f'{label or path}: the {fmt} runtime could not run the export '
                      f'({type(error).__name__}: {str(error).splitlines()[0][:200]})') from error
  shown = ' and '.join(f'{w}x{h}' for _, h, w in sizes)
  worst = max(float(np.max(np.abs(out.astype(np.float64) - ref)))
              if out.shape == ref.shape else np.inf for out, ref in pairs)
  scale = max([1.0] + [float(np.max(np.abs(ref))) for _, ref in pairs])
  tolerance = TOLERANCES[fmt] * scale
  line = (f'{runtime}: max |difference| {worst:.1e} on {shown} inputs '
          f'(tolerance {tolerance:.0e})')
  if not worst <= tolerance:
    raise ExportError(f'{label or path} differs from JAX in {line}; not kept')
  return f'verified in {line}'


def model_card(fmt: str, config: Any, record: dict[str, Any] | None, source: str,
               verification: str) -> dict[str, Any]:
  """The JSON written beside an export: what it computes and how it was checked."""
  record = record or {}
  return {
      'format': fmt,
      'source': source,
      'scale': config.scale,
      'input': 'float32 [batch, height, width, 3] RGB in [0, 1], height and width >= 2',
      'output': 'float32 [batch, scale*height, scale*width, 3] RGB in [0, 1], unclipped',
      'shipped_scores': record.get('scores', {}),
      'scored_with': record.get('scored_with'),
      'verification': verification,
      'config': json.loads(config.to_json_best_effort()),
  }


def export(model: Any, variables: Any, config: Any, fmt: str, output: str, *,
           source: str, record: dict[str, Any] | None = None,
           sizes: Sequence[tuple[int, int, int]] = VERIFY_SIZES) -> str:
  """Writes ``output`` in ``fmt`` and ``output.json`` (the model card), verified.

  Both files appear whole (written under temporary names, renamed once verified);
  nothing is left when the verification fails.

  Returns:
    The verification line.

  Raises:
    ExportError: missing packages, or the verification failed (see `verify`).
  """
  check_packages(fmt)
  output = pathlib.Path(output)
  with paths.replacing(output) as temporary:
    _WRITERS[fmt](model, variables, temporary)
    line = verify(temporary, fmt, unit_range_function(model, variables), sizes,
                  label=str(output))
  card = model_card(fmt, config, record, source, line)
  paths.write_whole(f'{output}.json', json.dumps(card, indent=2) + '\n')
  return line

"""The plain-text table of evaluation results: a row per set, a column per metric."""

import functools
from typing import Any

_COLUMN_LABELS = {'psnr': 'PSNR (dB)', 'ssim': 'SSIM', 'niqe': 'NIQE', 'lpips': 'LPIPS',
                  'lpips_vgg': 'LPIPS-VGG'}


def format_table(results: dict[str, dict[str, Any]]) -> str:
  """A plain-text table: set, images, each metric (PSNR (dB), SSIM, NIQE, LPIPS, ...),
  then the bicubic baseline's if present, then the folder read where results hold it."""
  width = max([len('set')] + [len(name) for name in results])
  scored = [result for result in results.values() if 'error' not in result]
  names = [key for key, value in (scored[0] if scored else {}).items()
           if key != 'images' and isinstance(value, float)]  # Not bias, failed, bicubic.
  columns = [(_COLUMN_LABELS.get(key, key), (key,)) for key in names]
  if scored and all('bicubic' in result for result in scored):
    columns += [(f'bicubic {_COLUMN_LABELS.get(key, key).removesuffix(" (dB)")}',
                 ('bicubic', key)) for key in names]
  sizes = [max(len(label), 6) for label, _ in columns]
  # The folder read, last: a set name means one folder (paths.image_folder), shown.
  folders = any('folder' in result for result in results.values())
  lines = [f'{"set":<{width}}  images' +
           ''.join(f'  {label:>{size}}' for (label, _), size in zip(columns, sizes)) +
           ('  folder' if folders else '')]
  for name, result in results.items():
    if 'error' in result:
      line = f'{name:<{width}}  not scored: {result["error"]}'
      if result.get('folder') and result['folder'] not in result['error']:
        line += f' (folder {result["folder"]})'
      lines.append(line)
      continue
    values = [functools.reduce(dict.get, keys, result) for _, keys in columns]
    line = (f'{name:<{width}}  {result["images"]:>6}' +
            ''.join(f'  {value:>{size}.4f}' for value, size in zip(values, sizes)))
    if 'folder' in result:
      line += f'  {result["folder"]}'
    if result.get('failed'):
      line += f'  ({len(result["failed"])} files skipped)'
    if result.get('not_written'):
      line += f'  ({len(result["not_written"])} SR images not written)'
    lines.append(line)
  return '\n'.join(lines)

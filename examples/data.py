"""Image classification data for the examples: loaders and shuffled epochs.

``digits`` (scikit-learn's bundled 8x8 digits) needs no download. MNIST,
Fashion-MNIST and CIFAR-10 are read from the files their publishers
distribute, when the user has them in ``data_dir``:

* ``mnist`` / ``fashion_mnist``: ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
  ``t10k-labels-idx1-ubyte``, each raw or gzipped (``.gz``);
* ``cifar10``: the python pickles ``data_batch_1`` .. ``data_batch_5`` and
  ``test_batch``, in ``data_dir/cifar-10-batches-py/`` or in ``data_dir``.

Images come back as float32 NHWC arrays in ``[0, 1]``, labels as int32.
"""

from collections.abc import Sequence
import gzip
import os
import pickle
from typing import NamedTuple

import numpy as np

DATASETS = ('digits', 'mnist', 'fashion_mnist', 'cifar10')

IDX_FILES = (
    'train-images-idx3-ubyte',
    'train-labels-idx1-ubyte',
    't10k-images-idx3-ubyte',
    't10k-labels-idx1-ubyte',
)
CIFAR10_TRAIN_FILES = tuple(f'data_batch_{i}' for i in range(1, 6))
CIFAR10_TEST_FILE = 'test_batch'
CIFAR10_SUBDIR = 'cifar-10-batches-py'

# The IDX magic number is 0x0000 then a type code (0x08: unsigned byte) and
# the number of dimensions.
_IDX_UBYTE = 0x08
_DIGITS_MAX_PIXEL = 16.0
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0
_CIFAR10_SHAPE = (3, 32, 32)
_CIFAR10_CLASSES = 10


class Dataset(NamedTuple):
  """A train/test split of labelled images.

  Attributes:
    train_images: float32 ``[n_train, height, width, channels]`` in ``[0, 1]``.
    train_labels: int32 ``[n_train]`` in ``[0, num_classes)``.
    test_images: float32 ``[n_test, height, width, channels]`` in ``[0, 1]``.
    test_labels: int32 ``[n_test]``.
    num_classes: the number of classes.
  """

  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int


class DataError(ValueError):
  """A dataset file is missing or not in the expected format."""


def load_dataset(name: str = 'digits', data_dir: str | None = None) -> Dataset:
  """Loads a dataset by name.

  Args:
    name: ``"digits"``, ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
    data_dir: the folder holding the dataset's files; required for every
      dataset except ``"digits"``.

  Returns:
    The :class:`Dataset`.

  Raises:
    ValueError: ``name`` is unknown.
    DataError: ``data_dir`` is missing, or a file is missing or corrupt; the
      message names the path and the files expected.
  """
  if name not in DATASETS:
    raise ValueError(f'name must be one of {DATASETS}, got {name!r}.')
  if name == 'digits':
    return _load_digits()
  if data_dir is None:
    expected = IDX_FILES if name != 'cifar10' else _cifar_expected()
    raise DataError(
        f'Dataset {name!r} is read from local files: pass data_dir (the'
        f' folder holding {", ".join(expected)}).'
    )
  if name == 'cifar10':
    return _load_cifar10(data_dir)
  return _load_idx_dataset(data_dir)


def epoch_batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
  """One shuffled epoch, cut into equal batches (the remainder is dropped).

  The order comes from ``rng.permutation`` alone, so a generator restored
  from a checkpoint (``rng.bit_generator.state``) continues the same sequence
  of epochs.

  Args:
    images: ``[n, ...]`` examples.
    labels: ``[n]`` labels.
    batch_size: examples per batch, ``1 <= batch_size <= n``.
    rng: a NumPy generator; it is advanced by one permutation.

  Returns:
    ``(images[steps, batch_size, ...], labels[steps, batch_size])`` with
    ``steps = n // batch_size``.

  Raises:
    ValueError: the batch size is out of range or the lengths differ.
  """
  n = len(images)
  if len(labels) != n:
    raise ValueError(
        f'images and labels differ in length: {n} vs {len(labels)}.'
    )
  if not 1 <= batch_size <= n:
    raise ValueError(
        f'batch_size must be in [1, {n}] (the number of examples), got'
        f' {batch_size}.'
    )
  steps = n // batch_size
  order = rng.permutation(n)[: steps * batch_size]
  return (
      images[order].reshape((steps, batch_size) + images.shape[1:]),
      labels[order].reshape((steps, batch_size)),
  )


def _load_digits() -> Dataset:
  # Imported here so that the IDX and CIFAR loaders do not need scikit-learn.
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top

  digits = datasets.load_digits()
  images = (digits.images / _DIGITS_MAX_PIXEL).astype(np.float32)[..., None]
  labels = digits.target.astype(np.int32)
  train_x, test_x, train_y, test_y = model_selection.train_test_split(
      images,
      labels,
      test_size=_DIGITS_TEST_FRACTION,
      random_state=_DIGITS_SPLIT_SEED,
      stratify=labels,
  )
  return Dataset(train_x, train_y, test_x, test_y, num_classes=10)


def _find_file(data_dir: str, name: str, expected: Sequence[str]) -> str:
  """Returns the path of ``name`` or ``name.gz`` in ``data_dir``."""
  for candidate in (name, name + '.gz'):
    path = os.path.join(data_dir, candidate)
    if os.path.isfile(path):
      return path
  raise DataError(
      f'{os.path.join(data_dir, name)}[.gz] not found. Expected in'
      f' {data_dir}: {", ".join(expected)} (each raw or .gz).'
  )


def _read_bytes(path: str) -> bytes:
  try:
    if path.endswith('.gz'):
      with gzip.open(path, 'rb') as f:
        return f.read()
    with open(path, 'rb') as f:
      return f.read()
  except (OSError, EOFError) as error:
    raise DataError(f'Cannot read {path}: {error}.') from error


def read_idx(path: str) -> np.ndarray:
  """Reads an unsigned-byte IDX file (raw or ``.gz``) into a uint8 array.

  Args:
    path: the file.

  Returns:
    The array, shaped as the header says.

  Raises:
    DataError: the file cannot be read, its header is not an unsigned-byte
      IDX header, or its size does not match the header.
  """
  raw = _read_bytes(path)
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE:
    raise DataError(
        f'{path} is not an unsigned-byte IDX file (its first bytes are'
        f' {raw[:4].hex()}, expected 000008 then the number of dimensions).'
    )
  ndim = raw[3]
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise DataError(f'{path} is truncated inside its IDX header.')
  shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], 'big')
                for i in range(ndim))
  expected = int(np.prod(shape))
  if len(raw) - header != expected:
    raise DataError(
        f'{path} holds {len(raw) - header} data bytes but its header promises'
        f' {expected} (shape {shape}): the file is truncated or corrupt.'
    )
  return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _load_idx_split(
    data_dir: str, prefix: str
) -> tuple[np.ndarray, np.ndarray, str]:
  """A split's images and labels, and the path of its images file."""
  images_path = _find_file(data_dir, f'{prefix}-images-idx3-ubyte', IDX_FILES)
  labels_path = _find_file(data_dir, f'{prefix}-labels-idx1-ubyte', IDX_FILES)
  images = read_idx(images_path)
  labels = read_idx(labels_path)
  if images.ndim != 3:
    raise DataError(
        f'{images_path} must hold images [n, rows, cols], got shape'
        f' {images.shape}.'
    )
  if not images.size:
    raise DataError(
        f'{images_path} holds no images (shape {images.shape}): the split'
        ' must not be empty.'
    )
  if labels.shape != images.shape[:1]:
    raise DataError(
        f'{labels_path} holds {labels.shape} labels for {images.shape[0]}'
        f' images in {images_path}.'
    )
  return (images[..., None].astype(np.float32) / 255.0,
          labels.astype(np.int32), images_path)


def _load_idx_dataset(data_dir: str) -> Dataset:
  train_x, train_y, train_path = _load_idx_split(data_dir, 'train')
  test_x, test_y, test_path = _load_idx_split(data_dir, 't10k')
  if test_x.shape[1:3] != train_x.shape[1:3]:
    raise DataError(
        f'{test_path} holds images of {test_x.shape[1:3]} pixels, but the'
        f' training images in {train_path} are {train_x.shape[1:3]}: both'
        ' splits must come from the same dataset.'
    )
  num_classes = int(max(train_y.max(), test_y.max())) + 1
  return Dataset(train_x, train_y, test_x, test_y, num_classes)


def _cifar_expected() -> tuple[str, ...]:
  return CIFAR10_TRAIN_FILES + (CIFAR10_TEST_FILE,)


def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
  try:
    with open(path, 'rb') as f:
      batch = pickle.load(f, encoding='bytes')
  except (OSError, EOFError, pickle.UnpicklingError, ValueError) as error:
    raise DataError(
        f'Cannot read the CIFAR-10 batch {path}: {error}.'
    ) from error
  if not isinstance(batch, dict):
    raise DataError(f'{path} is not a CIFAR-10 batch (not a dict).')
  data = batch.get(b'data', batch.get('data'))
  labels = batch.get(b'labels', batch.get('labels'))
  if data is None or labels is None:
    raise DataError(f'{path} is not a CIFAR-10 batch (no data or labels).')
  data = np.asarray(data, np.uint8)
  labels = np.asarray(labels)
  row = int(np.prod(_CIFAR10_SHAPE))
  if (data.ndim != 2 or data.shape[1] != row or labels.ndim != 1
      or len(labels) != len(data)):
    raise DataError(
        f'{path} must hold data [n, {row}] and n labels, got data'
        f' {data.shape} and {labels.shape} labels.'
    )
  if not len(data):
    raise DataError(f'{path} holds no images: a batch must not be empty.')
  if labels.dtype.kind not in 'iu':
    raise DataError(
        f'{path} must hold integer labels, got {labels.dtype} values.')
  outside = np.flatnonzero((labels < 0) | (labels >= _CIFAR10_CLASSES))
  if outside.size:
    raise DataError(
        f'{path} holds label {labels[outside[0]]} (at index {outside[0]};'
        f' {outside.size} in all) outside the CIFAR-10 classes'
        f' 0..{_CIFAR10_CLASSES - 1}.'
    )
  labels = labels.astype(np.int32)
  # Rows are channel-major (1024 red, 1024 green, 1024 blue): make NHWC.
  images = data.reshape((-1,) + _CIFAR10_SHAPE).transpose(0, 2, 3, 1)
  return images.astype(np.float32) / 255.0, labels


def _load_cifar10(data_dir: str) -> Dataset:
  subdir = os.path.join(data_dir, CIFAR10_SUBDIR)
  root = subdir if os.path.isdir(subdir) else data_dir
  paths = []
  for name in _cifar_expected():
    path = os.path.join(root, name)
    if not os.path.isfile(path):
      raise DataError(
          f'{path} not found. Expected in {data_dir} or {subdir}:'
          f' {", ".join(_cifar_expected())}.'
      )
    paths.append(path)
  train = [_read_cifar_batch(path) for path in paths[:-1]]
  test_x, test_y = _read_cifar_batch(paths[-1])
  train_x = np.concatenate([images for images, _ in train])
  train_y = np.concatenate([labels for _, labels in train])
  return Dataset(train_x, train_y, test_x, test_y,
                 num_classes=_CIFAR10_CLASSES)

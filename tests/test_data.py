"""Tests of the example data loaders on files written in the exact formats."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from examples import data


def _write_idx(path, array, *, compress=False):
  """Writes an unsigned-byte IDX file: 0x0000, 0x08, ndim, big-endian dims."""
  array = np.asarray(array, np.uint8)
  header = bytes([0, 0, 0x08, array.ndim])
  header += b''.join(struct.pack('>I', size) for size in array.shape)
  payload = header + array.tobytes()
  opener = gzip.open if compress else open
  with opener(path, 'wb') as f:
    f.write(payload)


def _write_mnist(directory, *, n_train=12, n_test=5, size=6, compress=False):
  rng = np.random.default_rng(0)
  arrays = {
      'train-images-idx3-ubyte': rng.integers(0, 256, (n_train, size, size)),
      'train-labels-idx1-ubyte': rng.integers(0, 10, n_train),
      't10k-images-idx3-ubyte': rng.integers(0, 256, (n_test, size, size)),
      't10k-labels-idx1-ubyte': rng.integers(0, 10, n_test),
  }
  for name, array in arrays.items():
    path = os.path.join(directory, name + ('.gz' if compress else ''))
    _write_idx(path, array, compress=compress)
  return arrays


def _write_cifar(directory, *, per_batch=4):
  rng = np.random.default_rng(1)
  batches = {}
  os.makedirs(directory, exist_ok=True)
  for name in data.CIFAR10_TRAIN_FILES + (data.CIFAR10_TEST_FILE,):
    batch = {
        b'batch_label': name.encode(),
        b'data': rng.integers(0, 256, (per_batch, 3072)).astype(np.uint8),
        b'labels': [int(v) for v in rng.integers(0, 10, per_batch)],
        b'filenames': [b'x.png'] * per_batch,
    }
    with open(os.path.join(directory, name), 'wb') as f:
      pickle.dump(batch, f, protocol=2)
    batches[name] = batch
  return batches


class TestDigits:

  def test_shapes_dtypes_and_range(self):
    ds = data.load_dataset()
    assert ds.train_images.shape == (1437, 8, 8, 1)
    assert ds.test_images.shape == (360, 8, 8, 1)
    assert ds.train_images.dtype == np.float32
    assert ds.train_labels.dtype == np.int32
    assert ds.num_classes == 10
    assert ds.train_images.min() == 0.0
    assert ds.train_images.max() == 1.0

  def test_split_is_fixed_and_stratified(self):
    first, second = data.load_dataset(), data.load_dataset()
    np.testing.assert_array_equal(first.test_images, second.test_images)
    train_share = np.bincount(first.train_labels) / len(first.train_labels)
    test_share = np.bincount(first.test_labels) / len(first.test_labels)
    np.testing.assert_allclose(train_share, test_share, atol=0.01)


class TestIdx:

  @pytest.mark.parametrize('compress', [False, True], ids=['raw', 'gz'])
  @pytest.mark.parametrize('name', ['mnist', 'fashion_mnist'])
  def test_reads_the_files(self, tmp_path, name, compress):
    arrays = _write_mnist(tmp_path, compress=compress)
    ds = data.load_dataset(name, str(tmp_path))
    assert ds.train_images.shape == (12, 6, 6, 1)
    assert ds.train_images.dtype == np.float32
    assert ds.test_labels.dtype == np.int32
    np.testing.assert_array_equal(
        ds.train_images[..., 0] * 255,
        arrays['train-images-idx3-ubyte'].astype(np.float32))
    np.testing.assert_array_equal(ds.test_labels,
                                  arrays['t10k-labels-idx1-ubyte'])

  def test_raw_and_gz_mixed(self, tmp_path):
    _write_mnist(tmp_path)
    raw = os.path.join(tmp_path, 't10k-images-idx3-ubyte')
    with open(raw, 'rb') as f, gzip.open(raw + '.gz', 'wb') as g:
      g.write(f.read())
    os.remove(raw)
    assert data.load_dataset('mnist', str(tmp_path)).test_images.shape[0] == 5

  def test_missing_file_names_path_and_expected_files(self, tmp_path):
    _write_mnist(tmp_path)
    os.remove(os.path.join(tmp_path, 't10k-labels-idx1-ubyte'))
    with pytest.raises(data.DataError) as info:
      data.load_dataset('mnist', str(tmp_path))
    message = str(info.value)
    assert os.path.join(str(tmp_path), 't10k-labels-idx1-ubyte') in message
    assert 'train-images-idx3-ubyte' in message

  def test_no_data_dir(self):
    with pytest.raises(data.DataError, match='data_dir'):
      data.load_dataset('fashion_mnist')

  def test_truncated_file(self, tmp_path):
    _write_mnist(tmp_path)
    path = os.path.join(tmp_path, 'train-images-idx3-ubyte')
    with open(path, 'rb') as f:
      payload = f.read()
    with open(path, 'wb') as f:
      f.write(payload[:-7])
    with pytest.raises(data.DataError, match='truncated or corrupt') as info:
      data.load_dataset('mnist', str(tmp_path))
    assert path in str(info.value)

  def test_bad_magic(self, tmp_path):
    _write_mnist(tmp_path)
    path = os.path.join(tmp_path, 'train-labels-idx1-ubyte')
    with open(path, 'wb') as f:
      f.write(b'<html>not found</html>')
    with pytest.raises(data.DataError, match='not an unsigned-byte IDX'):
      data.load_dataset('mnist', str(tmp_path))

  def test_corrupt_gzip(self, tmp_path):
    _write_mnist(tmp_path, compress=True)
    path = os.path.join(tmp_path, 'train-images-idx3-ubyte.gz')
    with open(path, 'wb') as f:
      f.write(b'\x1f\x8b garbage')
    with pytest.raises(data.DataError, match='Cannot read') as info:
      data.load_dataset('mnist', str(tmp_path))
    assert path in str(info.value)

  @pytest.mark.parametrize('prefix', ['train', 't10k'])
  def test_empty_split(self, tmp_path, prefix):
    _write_mnist(tmp_path, **{'n_train' if prefix == 'train' else 'n_test': 0})
    with pytest.raises(data.DataError, match='no images') as info:
      data.load_dataset('mnist', str(tmp_path))
    assert os.path.join(str(tmp_path), f'{prefix}-images-idx3-ubyte') in str(
        info.value)

  def test_test_images_of_another_shape(self, tmp_path):
    _write_mnist(tmp_path)
    path = os.path.join(tmp_path, 't10k-images-idx3-ubyte')
    _write_idx(path, np.zeros((5, 7, 6)))
    with pytest.raises(data.DataError, match=r'\(7, 6\)') as info:
      data.load_dataset('mnist', str(tmp_path))
    message = str(info.value)
    assert path in message and '(6, 6)' in message

  def test_label_count_mismatch(self, tmp_path):
    _write_mnist(tmp_path)
    _write_idx(os.path.join(tmp_path, 'train-labels-idx1-ubyte'), [1, 2])
    with pytest.raises(data.DataError, match='labels for 12 images'):
      data.load_dataset('mnist', str(tmp_path))


class TestCifar10:

  @pytest.mark.parametrize('subdir', [True, False])
  def test_reads_the_batches(self, tmp_path, subdir):
    root = tmp_path / data.CIFAR10_SUBDIR if subdir else tmp_path
    batches = _write_cifar(str(root))
    ds = data.load_dataset('cifar10', str(tmp_path))
    assert ds.train_images.shape == (20, 32, 32, 3)
    assert ds.test_images.shape == (4, 32, 32, 3)
    assert ds.num_classes == 10
    first = batches['data_batch_1'][b'data'][0]
    # Row layout: 1024 red, then green, then blue, each row-major 32x32.
    for channel in range(3):
      for row, col in [(0, 0), (5, 17), (31, 31)]:
        expected = first[channel * 1024 + row * 32 + col] / 255
        assert ds.train_images[0, row, col, channel] == pytest.approx(
            expected)
    np.testing.assert_array_equal(ds.test_labels,
                                  batches['test_batch'][b'labels'])
    np.testing.assert_array_equal(
        ds.train_labels[16:], batches['data_batch_5'][b'labels'])

  def test_missing_batch(self, tmp_path):
    _write_cifar(str(tmp_path))
    os.remove(os.path.join(tmp_path, 'data_batch_3'))
    with pytest.raises(data.DataError) as info:
      data.load_dataset('cifar10', str(tmp_path))
    assert os.path.join(str(tmp_path), 'data_batch_3') in str(info.value)
    assert 'test_batch' in str(info.value)

  def test_corrupt_batch(self, tmp_path):
    _write_cifar(str(tmp_path))
    path = os.path.join(tmp_path, 'test_batch')
    with open(path, 'wb') as f:
      f.write(b'\x80\x02not a pickle')
    with pytest.raises(data.DataError, match='Cannot read') as info:
      data.load_dataset('cifar10', str(tmp_path))
    assert path in str(info.value)

  def test_wrong_row_size(self, tmp_path):
    _write_cifar(str(tmp_path))
    path = os.path.join(tmp_path, 'data_batch_2')
    with open(path, 'wb') as f:
      pickle.dump({b'data': np.zeros((2, 100), np.uint8), b'labels': [0, 1]},
                  f)
    with pytest.raises(data.DataError, match=r'data \[n, 3072\]'):
      data.load_dataset('cifar10', str(tmp_path))


  @pytest.mark.parametrize('label', [10, 12, -1])
  @pytest.mark.parametrize('name', ['data_batch_3', 'test_batch'])
  def test_label_out_of_range(self, tmp_path, name, label):
    batches = _write_cifar(str(tmp_path))
    path = os.path.join(tmp_path, name)
    batch = batches[name]
    batch[b'labels'][1] = label
    with open(path, 'wb') as f:
      pickle.dump(batch, f, protocol=2)
    with pytest.raises(data.DataError, match=f'label {label}') as info:
      data.load_dataset('cifar10', str(tmp_path))
    assert path in str(info.value)

  def test_empty_batch(self, tmp_path):
    _write_cifar(str(tmp_path))
    path = os.path.join(tmp_path, 'test_batch')
    with open(path, 'wb') as f:
      pickle.dump({b'data': np.zeros((0, 3072), np.uint8), b'labels': []}, f)
    with pytest.raises(data.DataError, match='no images') as info:
      data.load_dataset('cifar10', str(tmp_path))
    assert path in str(info.value)


def test_unknown_dataset():
  with pytest.raises(ValueError, match="'svhn'"):
    data.load_dataset('svhn')


class TestEpochBatches:

  def test_shuffled_drop_remainder_epoch(self):
    images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    labels = np.arange(10, dtype=np.int32)
    x, y = data.epoch_batches(images, labels, 3, np.random.default_rng(0))
    assert x.shape == (3, 3, 1, 1, 1)
    assert y.shape == (3, 3)
    np.testing.assert_array_equal(x[..., 0, 0, 0], y)
    assert len(set(y.ravel().tolist())) == 9
    assert not np.array_equal(y.ravel(), np.arange(9))

  def test_generator_state_continues_the_sequence(self):
    images = np.zeros((20, 2, 2, 1), np.float32)
    labels = np.arange(20, dtype=np.int32)
    rng = np.random.default_rng(7)
    first = data.epoch_batches(images, labels, 4, rng)[1]
    saved = rng.bit_generator.state
    second = data.epoch_batches(images, labels, 4, rng)[1]
    assert not np.array_equal(first, second)
    restored = np.random.default_rng(0)
    restored.bit_generator.state = saved
    np.testing.assert_array_equal(
        data.epoch_batches(images, labels, 4, restored)[1], second)

  @pytest.mark.parametrize('batch_size', [0, 11])
  def test_bad_batch_size(self, batch_size):
    with pytest.raises(ValueError, match='batch_size'):
      data.epoch_batches(np.zeros((10, 1)), np.zeros(10), batch_size,
                         np.random.default_rng(0))

  def test_length_mismatch(self):
    with pytest.raises(ValueError, match='differ in length'):
      data.epoch_batches(np.zeros((10, 1)), np.zeros(9), 2,
                         np.random.default_rng(0))

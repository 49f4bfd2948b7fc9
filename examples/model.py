"""Small Flax NNX classifiers for NHWC images: a CNN and an MLP."""

from collections.abc import Sequence
import math

from flax import nnx
import jax

from examples import data

MODELS = ('cnn', 'mlp')
# Feature maps up to this side skip the pooling after the first convolution.
_FULL_RESOLUTION_MAX = 16


class CNN(nnx.Module):
  """Two 3x3 convolutions, adaptive average pooling, two dense layers.

  The feature map is average-pooled to a fixed ``grid x grid`` before the
  dense layers, so one architecture serves 8x8 digits, 28x28 MNIST and 32x32
  CIFAR-10. Images wider than 16 pixels (MNIST, CIFAR-10) are halved after
  the first convolution to keep the second one cheap; the 8x8 digits keep
  their full resolution.
  """

  def __init__(
      self,
      num_classes: int,
      *,
      in_channels: int = 1,
      features: tuple[int, int] = (32, 64),
      hidden: int = 128,
      grid: int = 4,
      rngs: nnx.Rngs,
  ):
    """Builds the layers.

    Args:
      num_classes: the number of output logits.
      in_channels: the channels of the input images.
      features: the output channels of the two convolutions.
      hidden: the width of the dense hidden layer.
      grid: the side of the pooled feature map fed to the dense layers.
      rngs: the initialisation keys.
    """
    self.grid = grid
    self.conv1 = nnx.Conv(in_channels, features[0], (3, 3), rngs=rngs)
    self.conv2 = nnx.Conv(features[0], features[1], (3, 3), rngs=rngs)
    self.dense = nnx.Linear(features[1] * grid * grid, hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, num_classes, rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    """Maps images ``[batch, height, width, channels]`` to logits."""
    x = nnx.relu(self.conv1(images))
    if max(x.shape[1:3]) > _FULL_RESOLUTION_MAX:
      x = nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = nnx.relu(self.conv2(x))
    window = tuple(math.ceil(size / self.grid) for size in x.shape[1:3])
    x = nnx.avg_pool(x, window_shape=window, strides=window, padding='SAME')
    x = nnx.relu(self.dense(x.reshape((x.shape[0], -1))))
    return self.head(x)


class MLP(nnx.Module):
  """A multilayer perceptron on flattened images."""

  def __init__(
      self,
      in_features: int,
      num_classes: int,
      *,
      hidden: Sequence[int] = (128,),
      rngs: nnx.Rngs,
  ):
    """Builds the layers.

    Args:
      in_features: ``height * width * channels`` of the input images.
      num_classes: the number of output logits.
      hidden: the widths of the hidden layers (ReLU after each).
      rngs: the initialisation keys.
    """
    widths = (in_features, *hidden)
    self.layers = nnx.List(
        [nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths, widths[1:])]
    )
    self.head = nnx.Linear(widths[-1], num_classes, rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    """Maps images ``[batch, height, width, channels]`` to logits."""
    x = images.reshape((images.shape[0], -1))
    for layer in self.layers:
      x = nnx.relu(layer(x))
    return self.head(x)


def make_model(name: str, dataset: data.Dataset, *, seed: int) -> nnx.Module:
  """Builds a model sized for ``dataset``.

  Args:
    name: ``"cnn"`` or ``"mlp"``.
    dataset: the data the model will see (image shape and number of classes).
    seed: the initialisation seed.

  Returns:
    A freshly initialised :class:`CNN` or :class:`MLP`.

  Raises:
    ValueError: ``name`` is unknown.
  """
  rngs = nnx.Rngs(seed)
  image_shape = dataset.train_images.shape[1:]
  if name == 'cnn':
    return CNN(dataset.num_classes, in_channels=image_shape[-1], rngs=rngs)
  if name == 'mlp':
    return MLP(math.prod(image_shape), dataset.num_classes, rngs=rngs)
  raise ValueError(f'model name must be one of {MODELS}, got {name!r}.')

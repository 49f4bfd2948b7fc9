"""Small Flax NNX classifiers for NHWC images: a CNN and an MLP.

The CNN carries what a user's model has: BatchNorm (``nnx.BatchStat``
running statistics, updated by every training step) and dropout (an
``nnx.Rngs`` stream drawn at every step). A freshly built model is in
training mode; call ``model.eval()`` (on a copy, or inside a jitted step) to
evaluate with the running statistics and without dropout.
"""

from collections.abc import Sequence
import math

from flax import nnx
import jax

from examples import data

MODELS = ('cnn', 'mlp')
# Feature maps up to this side skip the pooling after the first convolution.
_FULL_RESOLUTION_MAX = 16


class CNN(nnx.Module):
  """Two 3x3 convolutions with BatchNorm, average pooling, dropout, two dense.

  The feature map is average-pooled to a fixed ``grid x grid`` before the
  dense layers, so one architecture serves 8x8 digits, 28x28 MNIST and 32x32
  CIFAR-10. Images wider than 16 pixels (MNIST, CIFAR-10) are halved after
  the first convolution to keep the second one cheap; the 8x8 digits keep
  their full resolution.

  Each convolution is followed by BatchNorm (Ioffe and Szegedy, 2015,
  https://arxiv.org/abs/1502.03167) and a ReLU; the convolution has no bias,
  which BatchNorm's shift replaces. Dropout (Srivastava et al., 2014) acts
  on the dense hidden layer, before the head.
  """

  def __init__(
      self,
      num_classes: int,
      *,
      in_channels: int = 1,
      features: tuple[int, int] = (32, 64),
      hidden: int = 128,
      grid: int = 4,
      batch_norm: bool = True,
      batch_norm_momentum: float = 0.9,
      dropout: float = 0.25,
      rngs: nnx.Rngs,
  ):
    """Builds the layers.

    Args:
      num_classes: the number of output logits.
      in_channels: the channels of the input images.
      features: the output channels of the two convolutions.
      hidden: the width of the dense hidden layer.
      grid: the side of the pooled feature map fed to the dense layers.
      batch_norm: BatchNorm after each convolution (False: biased
        convolutions, no batch statistics).
      batch_norm_momentum: the running statistics' decay per training step;
        0.9 is PyTorch's default (``momentum=0.1`` there), short enough for
        runs of a few hundred steps (Keras and Flax use 0.99).
      dropout: the dropout rate of the dense hidden layer (0: none).
      rngs: the initialisation keys; dropout draws from a stream forked from
        its ``dropout`` stream (the default stream if it has none).
    """
    self.grid = grid
    # The two-pass variance, mean((x - mean)^2): the one-pass form,
    # mean(x^2) - mean(x)^2, cancels in float32 and amplifies the rounding
    # noise of the reduction order (one device against several).
    norm = lambda n: (
        nnx.BatchNorm(n, momentum=batch_norm_momentum,
                      use_fast_variance=False, rngs=rngs)
        if batch_norm else None)
    self.conv1 = nnx.Conv(in_channels, features[0], (3, 3),
                          use_bias=not batch_norm, rngs=rngs)
    self.norm1 = norm(features[0])
    self.conv2 = nnx.Conv(features[0], features[1], (3, 3),
                          use_bias=not batch_norm, rngs=rngs)
    self.norm2 = norm(features[1])
    self.dense = nnx.Linear(features[1] * grid * grid, hidden, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.head = nnx.Linear(hidden, num_classes, rngs=rngs)

  def _conv(self, conv, norm, x):
    x = conv(x)
    return nnx.relu(x if norm is None else norm(x))

  def __call__(self, images: jax.Array) -> jax.Array:
    """Maps images ``[batch, height, width, channels]`` to logits."""
    x = self._conv(self.conv1, self.norm1, images)
    if max(x.shape[1:3]) > _FULL_RESOLUTION_MAX:
      x = nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = self._conv(self.conv2, self.norm2, x)
    window = tuple(math.ceil(size / self.grid) for size in x.shape[1:3])
    x = nnx.avg_pool(x, window_shape=window, strides=window, padding='SAME')
    x = nnx.relu(self.dense(x.reshape((x.shape[0], -1))))
    return self.head(self.dropout(x))


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
    A freshly initialised :class:`CNN` (BatchNorm and dropout, in training
    mode) or :class:`MLP`.

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

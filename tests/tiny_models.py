"""A tiny convolutional model shared by the tests of sweeps and strategies."""

import jax
import jax.numpy as jnp
import numpy as np


def conv_loss(params, images):
  """Two 3x3 convolutions: vmapped over models, the second one is grouped."""
  dims = ('NHWC', 'HWIO', 'NHWC')
  h = jax.lax.conv_general_dilated(images, params['k1'], (1, 1), 'SAME',
                                   dimension_numbers=dims)
  h = jax.lax.conv_general_dilated(jnp.tanh(h), params['k2'], (1, 1), 'SAME',
                                   dimension_numbers=dims)
  return jnp.mean((h - 0.5) ** 2)


def conv_params():
  rng = np.random.default_rng(0)
  return {'k1': jnp.asarray(rng.normal(size=(3, 3, 1, 2)) * 0.3, jnp.float32),
          'k2': jnp.asarray(rng.normal(size=(3, 3, 2, 2)) * 0.3, jnp.float32)}

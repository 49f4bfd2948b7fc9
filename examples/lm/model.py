"""A character-level decoder-only transformer in Flax NNX.

Pre-LayerNorm blocks of causal multi-head self-attention and a GELU MLP,
learned positions, the output layer tied to the byte embedding, no dropout.
The interface other tasks build on::

  model = make_model(ModelConfig(), seed=0)
  loss = loss_fn(model, tokens)       # tokens int32[B, context + 1]: nats/byte
  tx = make_optimizer(schedule)       # clipped AdamW, decay on matrices only
  bpb = bits_per_byte(model, val)     # val int32[N, context + 1]

``loss_fn`` predicts ``tokens[:, 1:]`` from ``tokens[:, :-1]``; it is the
calling convention of ``optax_clr.nnx.range_test`` and ``optax_clr.nnx.sweep``.
"""

import dataclasses
import math

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from examples.lm import data


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The transformer's shape.

  Attributes:
    context: the longest sequence (positions 0 .. context - 1).
    d_model: the width of the residual stream.
    num_layers: transformer blocks.
    num_heads: attention heads (``d_model`` must be a multiple).
    mlp_ratio: the MLP's hidden width over ``d_model``.
    vocab_size: token values (256 bytes).
  """

  context: int = 64
  d_model: int = 64
  num_layers: int = 2
  num_heads: int = 4
  mlp_ratio: int = 4
  vocab_size: int = data.VOCAB_SIZE


class CausalSelfAttention(nnx.Module):
  """Multi-head attention in which position ``i`` sees positions ``<= i``."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    if config.d_model % config.num_heads:
      raise ValueError(f'd_model {config.d_model} is not a multiple of'
                       f' num_heads {config.num_heads}.')
    self.num_heads = config.num_heads
    self.qkv = nnx.Linear(config.d_model, 3 * config.d_model, rngs=rngs)
    self.out = nnx.Linear(config.d_model, config.d_model, rngs=rngs)

  def __call__(self, x):
    length, width = x.shape[-2:]
    head = width // self.num_heads
    q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
    split = lambda a: a.reshape(*a.shape[:-1], self.num_heads, head)
    scores = jnp.einsum('...qhd,...khd->...hqk', split(q), split(k))
    causal = jnp.tril(jnp.ones((length, length), bool))
    scores = jnp.where(causal, scores / math.sqrt(head), -jnp.inf)
    weights = jax.nn.softmax(scores, axis=-1)
    mixed = jnp.einsum('...hqk,...khd->...qhd', weights, split(v))
    return self.out(mixed.reshape(*x.shape))


class Block(nnx.Module):
  """``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    width = config.d_model
    self.ln1 = nnx.LayerNorm(width, rngs=rngs)
    self.attention = CausalSelfAttention(config, rngs=rngs)
    self.ln2 = nnx.LayerNorm(width, rngs=rngs)
    self.up = nnx.Linear(width, config.mlp_ratio * width, rngs=rngs)
    self.down = nnx.Linear(config.mlp_ratio * width, width, rngs=rngs)

  def __call__(self, x):
    x = x + self.attention(self.ln1(x))
    return x + self.down(nnx.gelu(self.up(self.ln2(x))))


class Transformer(nnx.Module):
  """Bytes in, next-byte logits out: ``int[..., L] -> float[..., L, 256]``."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    init = nnx.initializers.normal(0.02)
    self.config = config
    self.embed = nnx.Embed(config.vocab_size, config.d_model,
                           embedding_init=init, rngs=rngs)
    self.position = nnx.Param(
        init(rngs.params(), (config.context, config.d_model)))
    self.blocks = nnx.List([Block(config, rngs=rngs)
                            for _ in range(config.num_layers)])
    self.ln = nnx.LayerNorm(config.d_model, rngs=rngs)

  def __call__(self, tokens):
    x = self.embed(tokens) + self.position[:tokens.shape[-1]]
    for block in self.blocks:
      x = block(x)
    return self.embed.attend(self.ln(x))  # Tied output layer.


def make_model(config: ModelConfig = ModelConfig(), seed: int = 0
               ) -> Transformer:
  """A freshly initialized model; ``seed`` fixes its parameters."""
  return Transformer(config, rngs=nnx.Rngs(params=seed))


def loss_fn(model: Transformer, tokens: jax.Array) -> jax.Array:
  """The mean next-byte cross-entropy of ``int32[B, L + 1]`` windows, nats."""
  logits = model(tokens[..., :-1])
  return optax.softmax_cross_entropy_with_integer_labels(
      logits, tokens[..., 1:]).mean()


def bits_per_byte(model: Transformer, tokens: jax.Array, *,
                  chunk: int = 64) -> jax.Array:
  """The mean next-byte loss of windows in bits per byte (jittable).

  The windows are evaluated ``chunk`` at a time (``lax.map``) when ``chunk``
  divides their number, so evaluating many models at once (a sweep) holds
  the activations of ``chunk`` windows per model, not of all of them.
  """
  count = tokens.shape[0]
  if count <= chunk or count % chunk:
    return data.bits_per_byte(loss_fn(model, tokens))
  parts = tokens.reshape(count // chunk, chunk, *tokens.shape[1:])
  losses = jax.lax.map(lambda part: loss_fn(model, part), parts)
  return data.bits_per_byte(losses.mean())  # Equal parts: the overall mean.


def decay_mask(params):
  """True for the matrices (embedding included), False for biases and norms."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_optimizer(learning_rate, *, weight_decay: float = 0.1,
                   clip_norm: float = 1.0, b2: float = 0.99
                   ) -> optax.GradientTransformation:
  """Gradient clipping, then AdamW with the rate in its state.

  The rate lives in ``optax.inject_hyperparams``'s state (``learning_rate``,
  found by ``optax.tree_utils.tree_get``), so the trainer logs the rate each
  update used and ``optax_clr.sweep`` records it. Weight decay applies to
  the matrices only (:func:`decay_mask`).

  Args:
    learning_rate: a float or an ``optax.Schedule`` (traced values allowed).
    weight_decay: AdamW's decoupled decay, times the rate.
    clip_norm: the global gradient norm is clipped to this.
    b2: Adam's second-moment decay (0.99: short runs).

  Returns:
    The optimizer.
  """
  return optax.chain(
      optax.clip_by_global_norm(clip_norm),
      optax.inject_hyperparams(optax.adamw)(
          learning_rate=learning_rate, b1=0.9, b2=b2,
          weight_decay=weight_decay, mask=decay_mask),
  )

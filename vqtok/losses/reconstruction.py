"""Pixel reconstruction losses."""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from vqtok.config_fields import ConfigFields


def l1_loss(x: ArrayLike, x_hat: ArrayLike) -> jax.Array:
  """Mean absolute error, computed in float32.

  Args:
    x: target images.
    x_hat: reconstructions, same shape.

  Returns:
    Scalar mean of ``|x - x_hat|``.
  """
  d = jnp.asarray(x, jnp.float32) - jnp.asarray(x_hat, jnp.float32)
  return jnp.mean(jnp.abs(d))


def l2_loss(x: ArrayLike, x_hat: ArrayLike) -> jax.Array:
  """Mean squared error, computed in float32.

  Args:
    x: target images.
    x_hat: reconstructions, same shape.

  Returns:
    Scalar mean of ``(x - x_hat)**2``.
  """
  d = jnp.asarray(x, jnp.float32) - jnp.asarray(x_hat, jnp.float32)
  return jnp.mean(jnp.square(d))


#: ``config.loss`` weights of ``l1_loss`` and ``l2_loss``.
CONFIG = ConfigFields("loss", {"l1_weight": 1.0, "l2_weight": 0.0}, non_negative=("l1_weight", "l2_weight"))

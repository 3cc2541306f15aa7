"""srgan_jax: SRGAN (Ledig et al., CVPR 2017) in JAX/Flax; see README.md for the module map."""

from srgan_jax.runtime import signals as _signals

# A command (`python -m srgan_jax.main`, ...) handles SIGTERM from its first line, before
# it imports JAX and TensorFlow (seconds): see runtime/signals.py. Importing the package
# into another program changes nothing.
if _signals.started_as_command():
  _signals.install()

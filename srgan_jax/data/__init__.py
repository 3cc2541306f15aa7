"""Training input: image sources, the tf.data pipeline, and the device-resident source."""

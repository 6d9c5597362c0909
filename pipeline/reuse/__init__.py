"""Taking the winners back: best-config files and ``load_initializer`` (``best``), and the same
initializers for Flax, Keras and PyTorch (``export``)."""

"""Taking the winners back: best-config files and ``load_initializer`` (``best``), and the same
initializers for Flax, Keras and PyTorch (``export``, the public face of ``resolve``: what an
entry initializes, framework-free; ``calls``, ``export_flax``, ``export_keras``, ``export_torch``;
``rates`` and ``optimizers``: init.parametrization's per-parameter rates and the optimizer;
``snippets``: the code ``make best FORMAT=...`` prints)."""

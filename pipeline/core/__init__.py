"""The pure core: JAX and NumPy only. No Optuna, MLflow, OmegaConf, YAML, argument parsing or file
I/O under here (``tests/unit/test_layout.py`` checks it); the shell (config, engine, search,
tracking, reuse) imports the core, never the other way round.

- ``names``: the registries' names without JAX (what the config schema checks values against);
- ``activations``, ``initializers``: registries, formulas with their papers, sampling;
- ``model``: the Flax MLP, CNN and residual MLP (scanned, depth-masked hidden stack);
- ``transformer``: the encoder on token sequences (attention scale, t_fixup, recall task);
- ``net``: the model interface: any Flax module's parameter layout (roles, fans, stacks);
- ``rules``: per-parameter init rules (``init.rules``): globs, overrides, scale formulas;
- ``parametrization``: sp, μP, NTK, depth-μP as per-leaf init and learning-rate multipliers;
- ``train``: ``make_train`` returns pure per-row ``init``/``chunk`` functions;
- ``metrics``: metric definitions, the in-scan updates, summaries and the objective;
- ``diagnostics``, ``lsuv``: per-layer probes and LSUV inside the compiled call;
- ``residual``: the residual-rule table (what each ``init.residual`` sets, by depth);
- ``theory``: mean-field signal propagation, residual streams, attention logits;
- ``predict``: what theory predicts for one trial, its config read into ``theory``;
- ``data``: generated or bundled datasets;
- ``estimate``: what a study estimates per network and arm (T*, basins, bootstrap intervals).
"""

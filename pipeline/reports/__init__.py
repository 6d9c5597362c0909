"""Reports: what a finished study shows, above the sweep that ran it and the MLflow writer.

The figures (``plots``, which draws them all from the rows of ``trial_rows``, one module per
question: ``plots_training``, ``plots_signal``, ``plots_theory``, ``plots_residual``, sharing
``drawing``; ``heatmap``; and ``figures``: the process that draws them for the sweep's parent
run), what a study prints or renders (``report``, ``html_report``), the answer per network
(``cells``, ``recommend``, ``answer_text``), learning-rate and ranking transfer across sizes
(``transfer``), and the coordinate check (``coord_check``: width sweeps of a few training steps
on the engine, their slopes and figure).
"""

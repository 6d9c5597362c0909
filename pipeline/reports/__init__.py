"""Reports: what a finished study shows, above the sweep that ran it and the MLflow writer.

The figures (``plots``, ``heatmap``, and ``figures``: the process that draws them for the
sweep's parent run), what a study prints or renders (``report``, ``html_report``), the answer per
network (``cells``, ``recommend``, ``answer_text``), learning-rate and ranking transfer across
sizes (``transfer``), and the coordinate check (``coord_check``: width sweeps of a few training
steps on the engine, their slopes and figure).
"""

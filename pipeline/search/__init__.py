"""The search: what Optuna samples (``samplers``), study storage and handles (``study``), leases on
running trials (``lease``), the ask-train-tell loop (``sweep``) and worker processes
(``workers``)."""

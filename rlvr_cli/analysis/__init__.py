"""``rlvr analyze``: what a sweep's runs say about entropy — comparison table, plots, the
entropy–performance law, the covariance check, and Δlog p between a base and an RL model."""

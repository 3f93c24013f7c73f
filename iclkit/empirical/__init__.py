"""The empirical side's foundation: prompt sampling, prefix predictors, and the paper's metrics.

Trained learners and the experiment commands are not built yet (issue 5)."""

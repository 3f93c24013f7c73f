"""The empirical side: prompts, trained in-context learners, prefix predictors, the paper's
metrics, probes, and the experiments of Figs. 1-4 (`iclkit train|compare|noise-sweep|phase|probe`)."""

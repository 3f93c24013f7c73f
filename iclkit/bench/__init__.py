"""A benchmark for interpretability methods: constructions whose circuits are known."""

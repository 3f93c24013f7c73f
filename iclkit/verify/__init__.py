"""Verification: numeric checks against closed forms, symbolic proofs, property-based strategies."""

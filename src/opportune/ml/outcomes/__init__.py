"""Outcome models: what a visit is likely to achieve, from its live journey."""

"""Outcome models: what a visit is likely to achieve, from its live journey.

The layout of a model's features is kept with it, so an older model is served its own:

>>> from opportune.ml.outcomes.features import LAYOUT, FeatureSpec
>>> FeatureSpec().layout == LAYOUT
True
"""

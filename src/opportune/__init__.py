"""Opportune: self-hosted predictive engagement and predictive routing."""

__version__ = "0.1.0"

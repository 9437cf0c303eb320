"""Workspace configuration: a folder of YAML documents (sites, and later segments, outcomes...)."""

from opportune.workspace.documents import Site
from opportune.workspace.loader import ConfigError, Workspace, load_workspace

__all__ = ["ConfigError", "Site", "Workspace", "load_workspace"]

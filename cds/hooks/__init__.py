"""CDS Hooks 2.0 service: discovery, patient-view and encounter-discharge risk cards, feedback.

``init_app(app, settings)`` registers it in the application factory.
"""

from cds.hooks.blueprint import init_app, set_scorer

__all__ = ["init_app", "set_scorer"]

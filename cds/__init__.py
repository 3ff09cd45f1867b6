"""M-PRTM clinical decision support for heart-failure follow-up (the application layer)."""

__version__ = "0.1.0"

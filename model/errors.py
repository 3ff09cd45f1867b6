"""Errors raised by the model package.

Messages name the offending argument, file or patient id; never note text or other
protected health information.
"""

from __future__ import annotations


class ModelError(Exception):
    """Base class of every error the model package raises on purpose."""


class CheckpointError(ModelError):
    """A checkpoint file is missing, unreadable or not an M-PRTM checkpoint."""


class IncompatibleCheckpointError(CheckpointError):
    """A checkpoint was written by an incompatible format, config or text encoder."""


class TextEncoderError(ModelError):
    """The local text encoder folder is missing or cannot be loaded."""


class ModelInputError(ModelError):
    """A patient's inputs cannot be used (e.g. no modality at all, wrong image shape)."""


class TrainingError(ModelError):
    """Training cannot proceed (too few patients, no labels, no masks for stage 1)."""

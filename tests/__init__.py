"""The test suite; ``python -m tests...`` runs its helper processes from the repository root."""

import warnings

# oslo libraries import eventlet, whose deprecation notice would be noise in every helper process.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

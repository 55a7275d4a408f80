"""gitops-push: push-based GitOps for Terraform and Kubernetes, run from CI."""

from __future__ import annotations

__version__ = "0.1.0"

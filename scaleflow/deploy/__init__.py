"""Deployment: model labels (stable/canary), promotion, cluster manifests."""

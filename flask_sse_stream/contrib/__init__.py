"""Integrations with particular servers, on top of everything else."""

"""Adaptation strategies: small units that decide which weights train and at which rates."""

"""Blueprints: thin adapters from Functions triggers to the use cases."""

"""Prompts and preference data: the synthetic task, loaders of existing data, and the record types."""

"""Interpretability toolkit for d4lenspinn models."""

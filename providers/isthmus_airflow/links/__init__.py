"""Operator extra links of isthmus tasks."""

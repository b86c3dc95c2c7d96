"""Presentation layer: figures (seaborn/matplotlib) and notebook widgets; imports the studies,
imported by nothing below it."""

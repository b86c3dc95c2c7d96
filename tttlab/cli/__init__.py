"""Command-line layer: ``tttlab <command>``; imports every layer below, imported by none."""

"""Roadside perception: vehicle detection on camera frames."""

"""Doors: each translates a native call into the one mediation pipeline and decides nothing itself."""

"""Pieces every HTTP service of the platform shares (the management API, the people demo)."""

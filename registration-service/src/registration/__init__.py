"""The registration service: the platform's management API (Flask)."""

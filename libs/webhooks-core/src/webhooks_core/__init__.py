"""Shared package of the webhook platform: settings, schema, migrations, envelope, signing.

Services import this package; it never imports a service.
"""

"""The tests' fixtures and hooks live in one plugin, :mod:`tests.support.plugin`."""

pytest_plugins = ["tests.support.plugin"]

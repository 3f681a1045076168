"""The package version, in a module of its own so that stages can name it without importing the API facade."""

__version__ = "0.1.0"

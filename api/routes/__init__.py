"""The API's routes by concern: ``search``, ``images``, ``operations``."""

"""The ``bonemet`` command line: one module per subcommand (``cmd_<name>.py``, each with ``register``)."""

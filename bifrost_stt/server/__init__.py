"""The top: the app factory and the command line."""

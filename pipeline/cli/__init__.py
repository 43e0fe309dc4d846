"""The ``mailpipe`` command line."""

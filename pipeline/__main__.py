"""``python -m pipeline`` is ``mailpipe``."""

from pipeline.cli.main import main

main()

"""`python -m progress_server`: the same command line as `progress-server`."""

from progress_server.cli import main

main()

from progress_server.cli import main

main()

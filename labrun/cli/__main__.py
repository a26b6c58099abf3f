from labrun.cli import main

main()

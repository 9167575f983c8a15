from fleet.cli.app import main

main()

from fleet.cli.main import main

main()

from semassoc.cli.app import main

main()

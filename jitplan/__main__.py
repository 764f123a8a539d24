from jitplan.cli import main

main()

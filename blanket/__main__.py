from blanket.cli import main

main()

from ctl.main import main

main()

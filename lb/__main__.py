"""`python -m lb`: the same as `formation-lb`."""
from lb.main import main

main()

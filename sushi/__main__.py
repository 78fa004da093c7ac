"""`python -m sushi` is the `sushi` command."""
import sys

from .cli import main

sys.exit(main())

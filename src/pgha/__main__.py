"""`python -m pgha`: the same as the `pgha` command."""

from pgha.cli.main import main

if __name__ == "__main__":
    main()

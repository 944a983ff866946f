"""The pure decision core: stdlib only, no I/O, no clock. See decide.py for the theory of operation."""

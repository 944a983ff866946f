"""The agent's shell: the loop that observes, asks the core, and carries out its actions."""

"""The `pgha` command: the agent (`run`), local clusters (`up`, `down`) and the operator verbs."""

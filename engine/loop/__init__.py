"""The task loop: a session driven step by step, each step attempted through its
definitions or the model, within its limits; replay, secrets and waits."""

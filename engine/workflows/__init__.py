"""What a person writes: workflow files, their errors, what each step will do, the check
before a run, and the admission of a new session."""

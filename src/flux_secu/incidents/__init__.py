"""The incident lifecycle: one state machine that every writer of an incident's state goes through."""

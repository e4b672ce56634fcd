"""Who may change what, and the record of what was changed: projects, roles and grants, hashed API
tokens, the append-only audit log and run-time secrets. Imports no web framework."""

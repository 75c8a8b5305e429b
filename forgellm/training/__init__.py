"""Training: a supervisor (parent) runs a worker (child) that trains; see protocol.py."""

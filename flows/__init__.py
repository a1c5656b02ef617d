"""Prefect flows of atnn: thin wrappers whose tasks call the `atnn` library."""

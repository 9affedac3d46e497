"""Case studies written on the runtime's public API, as a user writing a new case would."""

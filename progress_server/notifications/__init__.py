"""Notifications: the operator's --on-complete command and --webhook, told of final outcomes."""

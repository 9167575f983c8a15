"""Commands that manage single apps (remove-app, deploy, rollback, releases)."""

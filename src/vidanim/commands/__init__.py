"""The operator and user commands of the `vidanim` CLI (thin: settings, one call, output)."""

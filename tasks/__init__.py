"""The mailtls deploy and audit tasks (see the README's Layout section)."""

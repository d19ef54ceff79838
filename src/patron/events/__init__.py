"""Event intake: orders (purchases and returns) and customer events."""

"""The messenger: a chat app built on Pully (examples/messenger/README.md)."""

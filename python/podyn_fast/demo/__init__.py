"""The demo: the DynamoDB Developer Guide's sample tables on a local emulator, migrated and followed."""

"""follow: apply DynamoDB Streams changes to the migrated tables, exactly once."""

"""DynamoDB side: requests signed by botocore, responses kept as raw bytes for the Rust core."""

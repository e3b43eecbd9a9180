"""PostgreSQL side: DDL rendering and binary COPY writing."""
